"""The fast GPU path: from the host tile to the labels, the data stays on the GPU.

The :class:`~tpem_seg.runtime.segmenter.Segmenter` takes this path when its backend computes
on CUDA through torch tensors (``backend.supports_device_tensors``: the torch backend on a GPU).
This module imports torch; the Segmenter imports it only then.

Per batch of tiles::

    prefetch thread  read + normalise (numpy) -> copy into a pinned host slot -> host-to-device
                     copy on its own CUDA stream (non-blocking), event "ready"
    main thread      compute stream waits for "ready" -> network (on out-of-memory the batch
                     halves and the run goes on) -> event "free" (the slot may be refilled)
                     -> Gaussian-weighted accumulation in a torch-tensor stitcher on the GPU
    per z-slab       argmax -> uint8 labels (or float16 probabilities) on the GPU -> device-to-host
                     copy into pinned memory (non-blocking), handed on once the next slab is queued

So the host sends normalised float32 tiles and receives only uint8 labels (or float16
probabilities); the network never waits for a copy. The batch size, unless given, comes from the
free GPU memory and the memory one tile needs (measured with one tile).

The stitching itself is the runtime's one stitch loop (:func:`~tpem_seg.runtime.loop.stitch_loop`)
over torch operations (:class:`~tpem_seg.runtime.arrays_torch.TorchOps`); this module is only the
transport that feeds it. The GPU-independent parts run on the CPU too and are tested there (the
whole run with ``device="cpu"`` equals the numpy path; :class:`OomBackoff` takes any
out-of-memory predicate).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from tpem_seg.runtime.arrays_torch import TorchOps
from tpem_seg.runtime.loop import LoopCounters, stitch_loop, with_flips
from tpem_seg.runtime.outputs import OutputHead
from tpem_seg.runtime.pipeline import RowDone, TileBatch, iter_tiles, prefetch
from tpem_seg.runtime.stitch import Stitcher

log = logging.getLogger(__name__)

#: Batches read ahead by the prefetch thread; the pinned/device slot ring holds this + 2.
PREFETCH_DEPTH = 2
#: Largest automatic batch (tiles per network call); more rarely helps a GPU already saturated.
MAX_AUTO_BATCH = 16
#: Fraction of the free GPU memory the automatic batch size may plan to use.
MEMORY_HEADROOM = 0.8


# -- batch size and out-of-memory ------------------------------------------------------------------


def is_cuda_oom(err: BaseException) -> bool:
    """Whether ``err`` is a GPU out-of-memory error (torch's, or cuDNN/cuBLAS failing to allocate)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "CUDNN_STATUS_ALLOC_FAILED" in text
                                              or "CUBLAS_STATUS_ALLOC_FAILED" in text)


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class OomBackoff:
    """Runs batches through a network in chunks of ``batch_size`` tiles, halving it on out-of-memory.

    When a chunk runs out of memory the cached memory is released, ``batch_size`` halves, and the
    same tiles run again in smaller chunks; the smaller size is kept for the rest of the run. At
    batch size 1 the error is raised. Any other error is raised at once.

    Args:
        batch_size: tiles per network call to start with.
        is_oom: which exceptions mean out-of-memory (tests inject fakes).
        release: called after an out-of-memory, before the retry (default: ``torch.cuda.empty_cache``).
    """

    def __init__(self, batch_size: int, is_oom: Callable[[BaseException], bool] = is_cuda_oom,
                 release: Callable[[], None] = _release_cached_memory):
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size} must be at least 1")
        self.batch_size = batch_size
        self.is_oom = is_oom
        self.release = release
        self.halvings = 0

    def __call__(self, forward: Callable, tiles) -> list:
        """``[forward(chunk) for chunk of tiles]`` with chunks of at most ``batch_size`` (N first)."""
        outputs = []
        start = 0
        while start < len(tiles):
            chunk = tiles[start:start + self.batch_size]
            out_of_memory = False
            try:
                outputs.append(forward(chunk))
            except Exception as err:
                if not self.is_oom(err) or self.batch_size == 1:
                    raise
                out_of_memory = True  # handled below, once the exception (and its frames) is released
            if out_of_memory:
                self.release()
                self.batch_size = max(1, self.batch_size // 2)
                self.halvings += 1
                log.warning("GPU out of memory with %d tiles per call; going on with %d",
                            len(chunk), self.batch_size)
                continue
            start += len(chunk)
        return outputs


def choose_batch_size(free_bytes: int, tile_bytes: int, fixed_bytes: int = 0, cap: int = MAX_AUTO_BATCH,
                      headroom: float = MEMORY_HEADROOM) -> int:
    """Tiles per network call that fit ``headroom * free_bytes - fixed_bytes`` at ``tile_bytes`` each,
    between 1 and ``cap``."""
    budget = headroom * free_bytes - fixed_bytes
    return int(max(1, min(cap, budget // max(tile_bytes, 1))))


def measure_tile_bytes(forward: Callable, sample: torch.Tensor) -> int:
    """Peak GPU memory (bytes) ``forward`` allocates beyond what is held, for the batch ``sample``."""
    device = sample.device
    torch.cuda.synchronize(device)
    held = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    forward(sample)
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - held)


# -- the run ---------------------------------------------------------------------------------------


class _HostEvent:
    """Stand-in for ``torch.cuda.Event`` when the GPU path runs on the CPU (tests): work is synchronous."""

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass


class _Device:
    """Pinned buffers, streams and events for ``device``: CUDA's, or synchronous stand-ins on the CPU,
    so the whole path (slots, prefetch, skipping, cropping, out-of-memory) also runs in CPU tests."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def pinned(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=self.cuda)

    def event(self):
        return torch.cuda.Event() if self.cuda else _HostEvent()

    def stream(self):
        return torch.cuda.Stream(self.device) if self.cuda else None

    def on_stream(self, stream):
        """Context: issue work on ``stream`` (a no-op on the CPU)."""
        return torch.cuda.stream(stream) if self.cuda else contextlib.nullcontext()

    def wait(self, event) -> None:
        """Make the compute (current) stream wait for ``event``."""
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_event(event)

    def record(self, event) -> None:
        """Record ``event`` on the compute (current) stream."""
        event.record(torch.cuda.current_stream(self.device) if self.cuda else None)

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def context(self):
        return torch.cuda.device(self.device) if self.cuda else contextlib.nullcontext()


@dataclass
class _Slot:
    """A pinned host buffer and its device twin ``(B, C, D, H, W)`` float32, with their events."""

    host: torch.Tensor
    device: torch.Tensor
    ready: object  # event: the host-to-device copy is done
    free: object  # event: the network has read ``device``


@dataclass
class _DeviceBatch:
    """A batch on the GPU: ``slot.device[:n]`` holds its non-empty tiles, in order."""

    slot: _Slot
    n: int
    origins: list[tuple[int, int, int]]
    empty: np.ndarray | None


class _DeferredOutputs:
    """Device-to-host copies of finished blocks into pinned memory, handed to ``emit`` one block late,
    so the copy overlaps the next slab's compute instead of stalling the stream."""

    def __init__(self, emit: Callable[[int, np.ndarray], None], device: _Device):
        self._emit = emit
        self._device = device
        self._pending: tuple[int, torch.Tensor, object] | None = None

    def submit(self, first: int, block: torch.Tensor) -> None:
        host = self._device.pinned(block.shape, block.dtype)
        host.copy_(block, non_blocking=self._device.cuda)
        event = self._device.event()
        self._device.record(event)
        self.flush()
        self._pending = (first, host, event)

    def flush(self) -> None:
        if self._pending is not None:
            first, host, event = self._pending
            self._pending = None
            event.synchronize()
            self._emit(first, host.numpy())


class GpuStitchRun:
    """One volume (or block) through the GPU path (see the module docstring).

    Args:
        backend: a loaded backend with ``infer_tensor(x) -> logits`` on its device (CUDA; a CPU
            device runs the same steps synchronously, for tests).
        plan: the tile plan (a :class:`~tpem_seg.runtime.pipeline.TilePlan` or a block's part of one);
            weights: Gaussian blending weights ``(D, H, W)``.
        n_classes: network outputs per voxel; head: what the run hands out.
        options: the run's :class:`~tpem_seg.runtime.settings.TileOptions`.
        background: per-class logits for skipped empty tiles.
        chosen_batch: the batch size an earlier part of the same run settled on (the blocks after the
            first), so it is measured once per run; None: ``options.batch_size``, else measured.
        is_oom: which exceptions mean out-of-memory (default :func:`is_cuda_oom`; tests inject fakes).
    """

    def __init__(self, backend, plan, weights: np.ndarray, n_classes: int, head: OutputHead, options,
                 background: Sequence[float], chosen_batch: int | None = None,
                 is_oom: Callable[[BaseException], bool] = is_cuda_oom):
        self.backend = backend
        self.plan = plan
        self.weights = weights
        self.n_classes = n_classes
        self.head = head
        self.options = options
        self.background = list(background)
        self.device = torch.device(backend.device)
        self.ops = TorchOps(self.device)
        self.is_oom = is_oom
        self.chosen_batch = chosen_batch
        self.forward = with_flips(backend.infer_tensor, self.ops) if options.tta else backend.infer_tensor
        self.batch_size: int | None = None
        self.backoff: OomBackoff | None = None

    def run(self, volume, normalizer, channels: Sequence[int] | None, emit: Callable[[int, np.ndarray], None],
            progress: Callable[[int], None] = lambda n: None) -> LoopCounters:
        """Segment ``volume``; ``emit(first_plane, block)`` receives each finished slab's output (numpy), in z order."""
        plan = self.plan
        device = _Device(self.device)
        in_channels = len(channels) if channels is not None else volume.n_channels
        with device.context(), torch.inference_mode():
            self.batch_size = self.options.batch_size or self.chosen_batch or self._auto_batch_size(in_channels)
            self.backoff = OomBackoff(self.batch_size, is_oom=self.is_oom)
            slots = [self._slot(device, in_channels) for _ in range(PREFETCH_DEPTH + 2)]
            stitcher = Stitcher(self.n_classes, plan.padded, plan.tile, self.weights, self.ops)
            outputs = _DeferredOutputs(emit, device)
            tiles = iter_tiles(volume, plan, normalizer, channels, self.batch_size, self.options.screen_threshold)
            items = prefetch(_upload(tiles, slots, device, device.stream()), depth=PREFETCH_DEPTH)
            counters = stitch_loop(items, plan, stitcher, lambda batch: self._predict(batch, device), self.head,
                                   self.background, outputs.submit, progress)
            outputs.flush()
            device.synchronize()
        log.info("gpu path: %d tiles per call%s", self.backoff.batch_size,
                 f" (halved {self.backoff.halvings}x on out-of-memory)" if self.backoff.halvings else "")
        return counters

    def _predict(self, batch: _DeviceBatch, device: _Device) -> torch.Tensor | None:
        """Logits of the batch's non-empty tiles (halving on out-of-memory); frees its slot either way."""
        if not batch.n:
            device.record(batch.slot.free)
            return None
        device.wait(batch.slot.ready)
        logits = self.backoff(self.forward, batch.slot.device[:batch.n])
        device.record(batch.slot.free)
        return torch.cat(logits) if len(logits) > 1 else logits[0]

    def _slot(self, device: _Device, in_channels: int) -> _Slot:
        shape = (self.batch_size, in_channels, *self.plan.tile)
        return _Slot(device.pinned(shape, torch.float32), torch.empty(shape, dtype=torch.float32, device=self.device),
                     device.event(), device.event())

    def _auto_batch_size(self, in_channels: int) -> int:
        """Tiles per call from the free GPU memory and one tile's measured need (a warm-up call, too)."""
        if self.backend.static_batch or self.device.type != "cuda":
            return self.backend.default_batch_size()
        voxels = int(np.prod(self.plan.tile))
        sample = torch.zeros((1, in_channels, *self.plan.tile), device=self.device)
        activations = measure_tile_bytes(self.forward, sample)
        del sample
        # Per tile beyond the network's activations: its input in every slot and its float32 logits.
        per_tile = activations + ((PREFETCH_DEPTH + 2) * in_channels + self.n_classes) * voxels * 4
        window = (self.n_classes + 1) * self.plan.tile[0] * self.plan.padded[1] * self.plan.padded[2] * 4
        free, _ = torch.cuda.mem_get_info(self.device)
        cap = min(MAX_AUTO_BATCH, len(self.plan.yx_origins))
        size = choose_batch_size(free, per_tile, fixed_bytes=window, cap=cap)
        log.info("gpu path: %.0f MiB free, %.0f MiB per tile -> %d tiles per call", free / 2**20,
                 per_tile / 2**20, size)
        return size


def _upload(items: Iterable[TileBatch | RowDone], slots: list[_Slot], device: _Device,
            stream) -> Iterator[_DeviceBatch | RowDone]:
    """Runs in the prefetch thread: each batch's non-empty tiles into the next pinned slot, then a
    non-blocking host-to-device copy on ``stream``.

    A slot is refilled only after the network read it (its ``free`` event); with ``len(slots)`` =
    prefetch depth + 2, the consumer has always recorded that event by then.
    """
    index = 0
    for item in items:
        if isinstance(item, RowDone):
            yield item
            continue
        slot = slots[index % len(slots)]
        index += 1
        slot.free.synchronize()
        tiles = item.tiles if item.empty is None else item.tiles[~item.empty]
        n = len(tiles)
        if n:
            # inference_mode is per thread: the slots were made under it in the main thread.
            with torch.inference_mode(), device.on_stream(stream):
                slot.host[:n].numpy()[...] = tiles
                slot.device[:n].copy_(slot.host[:n], non_blocking=device.cuda)
                slot.ready.record(stream)
        yield _DeviceBatch(slot, n, list(item.origins), item.empty)
