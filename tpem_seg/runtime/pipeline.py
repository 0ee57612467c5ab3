"""The streaming data path: read and normalise tiles ahead, write slabs behind.

Data flows one way: volume -> normalised z-slab -> tile batches -> backend ->
stitcher -> finished slabs -> writer. Reading runs in a prefetch thread and
writing in a writer thread, so the backend never waits on the disk.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from tpem_seg.io.volume import KNOWN_AXES
from tpem_seg.runtime.normalize import Normalizer
from tpem_seg.runtime.tiling import pad_widths, scan_starts

log = logging.getLogger(__name__)

T = TypeVar("T")
#: A box of voxels: ``(lo, hi)`` per axis (z, y, x).
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
_DONE = object()


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles go over a volume of spatial ``shape`` (Z, Y, X).

    ``padded`` is ``shape`` zero-padded up to the tile where thinner (``pads``
    gives (before, after) per axis); all tile origins are in padded coordinates.
    """

    shape: tuple[int, int, int]
    tile: tuple[int, int, int]
    pads: tuple[tuple[int, int], ...]
    z_starts: tuple[int, ...]
    yx_origins: tuple[tuple[int, int], ...]

    @property
    def padded(self) -> tuple[int, int, int]:
        return tuple(s + a + b for s, (a, b) in zip(self.shape, self.pads))  # type: ignore[return-value]

    @property
    def n_tiles(self) -> int:
        return len(self.z_starts) * len(self.yx_origins)

    def output_part(self, z0: int, depth: int) -> tuple[int, tuple[slice, slice, slice]] | None:
        """The part of a finished slab (padded planes ``z0 .. z0 + depth``) that lies in the volume:
        ``(first volume plane, (z, y, x) slices into the slab)``, or None when it is all padding."""
        (pz, _), (py, _), (px, _) = self.pads
        lo, hi = max(z0, pz), min(z0 + depth, pz + self.shape[0])
        if hi <= lo:
            return None
        return lo - pz, (slice(lo - z0, hi - z0), slice(py, py + self.shape[1]), slice(px, px + self.shape[2]))

    def row_batches(self, batch_size: int) -> list[tuple[tuple[tuple[int, int], ...], int]]:
        """The (y, x) origins of each network call in a row, and the call's size: chunks of ``batch_size``."""
        chunks = [self.yx_origins[i:i + batch_size] for i in range(0, len(self.yx_origins), batch_size)]
        return [(chunk, len(chunk)) for chunk in chunks]

    def read_slab(self, volume, z: int, normalizer: Normalizer, channels: Sequence[int] | None) -> np.ndarray:
        """Normalised slab ``(C, tile_z, Yp, Xp)`` float32 for padded planes ``[z, z + tile_z)``.

        Padding voxels are zero after normalisation (as MONAI pads its input).
        """
        (pz, _), (py, _), (px, _) = self.pads
        z0, z1 = max(z - pz, 0), min(z - pz + self.tile[0], self.shape[0])
        block = normalizer(volume.read_czyx(z0, z1, channels))
        slab = np.zeros((block.shape[0], self.tile[0], *self.padded[1:]), dtype=np.float32)
        dz = z0 - (z - pz)
        slab[:, dz:dz + block.shape[1], py:py + self.shape[1], px:px + self.shape[2]] = block
        return slab


def make_plan(shape: Sequence[int], tile: Sequence[int], overlap: float) -> TilePlan:
    shape = tuple(int(s) for s in shape)
    tile = tuple(int(t) for t in tile)
    pads = tuple(pad_widths(shape, tile))
    padded = [s + a + b for s, (a, b) in zip(shape, pads)]
    ys, xs = (scan_starts(padded[i], tile[i], overlap) for i in (1, 2))
    return TilePlan(shape, tile, pads, tuple(scan_starts(padded[0], tile[0], overlap)),
                    tuple((y, x) for y in ys for x in xs))


@dataclass
class TileBatch:
    """Normalised tiles ``(N, C, D, H, W)`` float32 and their padded-grid origins (z, y, x).

    ``tiles`` may hold zero tiles after the ``len(origins)`` real ones: in a block they fill the
    network call to the size it has in one pass (see :func:`iter_tiles`).

    ``empty``: per tile, whether it shows no foreground (:func:`empty_tiles`); None when
    empty tiles are not being looked for.
    """

    tiles: np.ndarray
    origins: list[tuple[int, int, int]]
    empty: np.ndarray | None = None


@dataclass
class RowDone:
    """All tiles starting at the previous z are sent; planes before ``next_z`` are final."""

    next_z: int


def read_box(volume, box: Box, channels: Sequence[int] | None = None) -> np.ndarray:
    """Voxels ``box`` (``(lo, hi)`` per axis z, y, x) of ``volume`` as ``(C, dz, dy, dx)``, file dtype.

    A volume with its own ``read_box`` (e.g. :class:`~tpem_seg.runtime.resample.ResampledVolume`)
    computes it; a :class:`~tpem_seg.io.Volume` is sliced, so only the box is read (memmap, zarr,
    TIFF by plane).
    """
    own = getattr(volume, "read_box", None)
    if own is not None:
        return own(box, channels)
    spans = dict(zip("ZYX", box))
    index = tuple(slice(*spans[a]) if a in spans else slice(None) for a in volume.axes)
    data = np.asarray(volume.data[index])
    data = np.transpose(data, [volume.axes.index(a) for a in KNOWN_AXES if a in volume.axes])
    if "C" not in volume.axes:
        data = data[np.newaxis]
    return data if channels is None else data[list(channels)]


def iter_tiles(volume, plan: TilePlan, normalizer: Normalizer, channels: Sequence[int] | None,
               batch_size: int, empty_threshold: float | None = None) -> Iterator[TileBatch | RowDone]:
    """Batches of tiles row by row, each row followed by a :class:`RowDone`.

    ``plan`` is a :class:`TilePlan` or a block's part of one (:class:`~tpem_seg.runtime.blocks.BlockPlan`):
    anything with ``tile``, ``z_starts``, ``padded``, ``read_slab`` and ``row_batches``. A batch
    holds as many tiles as the network call that the whole-volume plan makes for them: a block
    fills a call it shares with tiles outside it with zero tiles (after its own, past ``origins``),
    because backends round differently at different batch sizes. With ``empty_threshold``, each
    batch says which of its tiles are empty (see :func:`empty_tiles`); calls are then not filled.
    """
    d, h, w = plan.tile
    for i, z in enumerate(plan.z_starts):
        slab = plan.read_slab(volume, z, normalizer, channels)
        for origins, call_size in plan.row_batches(batch_size):
            n = len(origins) if empty_threshold is not None else call_size
            tiles = np.zeros((n, slab.shape[0], d, h, w), dtype=np.float32)
            for j, (y, x) in enumerate(origins):
                tiles[j] = slab[:, :, y:y + h, x:x + w]
            empty = None if empty_threshold is None else empty_tiles(tiles, empty_threshold)
            yield TileBatch(tiles, [(z, y, x) for y, x in origins], empty)
        next_z = plan.z_starts[i + 1] if i + 1 < len(plan.z_starts) else plan.padded[0]
        yield RowDone(next_z)


#: A tile is empty when, in every channel, fewer than this fraction of its voxels reach the
#: threshold: its 99th percentile of normalised intensity lies below the threshold.
EMPTY_FRACTION = 0.01


def empty_tiles(tiles: np.ndarray, threshold: float, fraction: float = EMPTY_FRACTION) -> np.ndarray:
    """Per tile of ``tiles (N, C, D, H, W)`` (normalised intensities), whether it shows no foreground.

    A tile is empty when every channel has fewer than ``fraction`` of its voxels at or above
    ``threshold``, i.e. each channel's ``100 * (1 - fraction)``-th percentile (99th by default)
    is below ``threshold``. One comparison pass per tile, no sort. Padding voxels (zero after
    normalisation) count as dark, as the network sees them. Returns bool ``(N,)``.
    """
    n, c = tiles.shape[:2]
    voxels = int(np.prod(tiles.shape[2:]))
    bright = np.count_nonzero((tiles >= np.float32(threshold)).reshape(n, c, voxels), axis=2)
    return (bright < fraction * voxels).all(axis=1)


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead.

    An exception in the producer is re-raised in the consumer; closing the
    consumer early (break, exception, Ctrl-C) stops the producer.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                _put(q, item, stop)
            _put(q, _DONE, stop)
        except BaseException as err:  # handed to the consumer, which re-raises it
            _put(q, err, stop)

    thread = threading.Thread(target=produce, name="tpem-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


class BackgroundWriter:
    """Calls ``write(item)`` for each submitted item (an output slab or block, as the caller's
    ``write`` takes it) in a writer thread, in order; at most ``depth`` wait."""

    def __init__(self, write: Callable[[Any], None], depth: int = 2):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tpem-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._cancelled.is_set():
            try:
                block = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if block is _DONE:
                return
            if self._error is None:
                try:
                    self._write(block)
                except BaseException as err:  # re-raised in the submitting thread
                    self._error = err

    def submit(self, item: Any) -> None:
        self._raise_pending()
        self._queue.put(item)

    def close(self) -> None:
        """Wait for all writes; re-raise the first write error."""
        self._queue.put(_DONE)
        self._thread.join()
        self._raise_pending()

    def cancel(self, timeout: float = 10.0) -> None:
        """Drop what is not written yet and wait at most ``timeout`` s for the block in progress.

        For a run that failed or was stopped: it does not touch the queue, whose lock a stop signal
        may have interrupted mid-operation (waiting on it then could hang the process for good).
        """
        self._cancelled.set()
        self._thread.join(timeout)

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error
