"""What the dock widget runs, without Qt: a request, channel stacking, and a segmentation that
reports tiles as they finish and stops when asked.

Progress and cancelling go through the public :class:`~tpem_seg.runtime.backends.base.Backend`
interface: :class:`MonitoredBackend` wraps the real backend, counts the tiles of every call and
raises :class:`Cancelled` before the next call once cancelling was asked for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tpem_seg.errors import InputError, TpemSegError
from tpem_seg.io import Volume
from tpem_seg.models import ModelPackage, open_package
from tpem_seg.runtime import Segmenter
from tpem_seg.runtime.backends import create_backend
from tpem_seg.runtime.backends.base import Backend
from tpem_seg.runtime.outputs import OutputHead
from tpem_seg.runtime.resample import needs_resampling
from tpem_seg.runtime.tiling import plan_tiles


class Cancelled(TpemSegError):
    """The user stopped the segmentation."""


@dataclass(frozen=True)
class SegmentRequest:
    """The widget's settings.

    Attributes:
        model: a bundled model name or a ``.tpem`` folder.
        backend, device, precision: as for :class:`~tpem_seg.runtime.Segmenter`.
        overlap: fraction of a tile shared with its neighbours.
        tta: average the 8 flips of every tile.
        channels: which channels of the stacked image feed the network, in order (None: all).
        probabilities: also return the class probabilities.
    """

    model: str
    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    overlap: float = 0.25
    tta: bool = False
    channels: tuple[int, ...] | None = None
    probabilities: bool = False


@dataclass
class SegmentResult:
    """Labels ``(Z, Y, X)`` uint8, optionally probabilities ``(K, Z, Y, X)`` float16, and what made them."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    classes: list[str]
    model: str
    summary: str


def stack_channels(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Image layers' data as one ``(C, Z, Y, X)`` array: 3D layers are one channel, 4D ones (channel
    first) several, in the given order.

    Raises:
        InputError: a layer that is not 3D or 4D, or layers of different z/y/x shapes.
    """
    channels = []
    for data in arrays:
        data = np.asarray(data)
        if data.ndim not in (3, 4):
            raise InputError(f"an image layer of shape {data.shape} is not a 3D stack (Z, Y, X) or (C, Z, Y, X); "
                             "choose 3D image layers")
        channels.extend(data[np.newaxis] if data.ndim == 3 else list(data))
    shapes = {c.shape for c in channels}
    if len(shapes) != 1:
        raise InputError(f"the chosen image layers differ in shape ({', '.join(map(str, sorted(shapes)))}); "
                         "choose layers of one stack")
    return np.stack(channels)


class MonitoredBackend(Backend):
    """A backend that tells ``on_tiles(n)`` after every call and stops once ``cancel`` is set."""

    def __init__(self, inner: Backend, on_tiles: Callable[[int], None], cancel: threading.Event):
        super().__init__(inner.package, device=inner.device, precision=inner.precision)
        self.name = inner.name
        self._inner = inner
        self._on_tiles = on_tiles
        self._cancel = cancel

    def default_batch_size(self) -> int:
        return self._inner.default_batch_size()

    def describe(self) -> str:
        return self._inner.describe()

    def _load(self) -> None:
        self._inner.load()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self._cancel.is_set():
            raise Cancelled("segmentation cancelled; nothing was added")
        logits = self._inner.infer(batch)
        self._on_tiles(batch.shape[0])
        return logits

    def _close(self) -> None:
        self._inner.close()


def network_calls(package: ModelPackage, shape_zyx: Sequence[int], spacing: Sequence[float] | None,
                  request: SegmentRequest) -> int:
    """Tiles the network will see for a volume (x 8 with TTA): the progress bar's total."""
    manifest = package.manifest
    shape = list(shape_zyx)
    if spacing is not None and manifest.spacing is not None and needs_resampling(spacing, manifest.spacing):
        shape = [max(1, round(n * s / m)) for n, s, m in zip(shape, spacing, manifest.spacing)]
    padded = [max(n, t) for n, t in zip(shape, manifest.tile)]
    return len(plan_tiles(padded, manifest.tile, request.overlap)) * (8 if request.tta else 1)


def segment(data: np.ndarray, spacing: Sequence[float] | None, request: SegmentRequest,
            on_tiles: Callable[[int], None] = lambda n: None,
            cancel: threading.Event | None = None) -> SegmentResult:
    """Segment ``data`` ``(C, Z, Y, X)`` at voxel size ``spacing`` (µm, or None: the model's).

    Raises:
        Cancelled: ``cancel`` was set before the run finished.
        TpemSegError: a problem the user can fix (wrong channel count, unknown model...).
    """
    package = open_package(request.model)
    inner = create_backend(request.backend, package, device=request.device, precision=request.precision)
    backend = MonitoredBackend(inner, on_tiles, cancel or threading.Event())
    volume = Volume(data, "CZYX", spacing=tuple(spacing) if spacing is not None else None)
    channels = list(request.channels) if request.channels is not None else None
    # Logits, then the runtime's own finishing step: labels identical to `tpem-seg run`'s, and
    # probabilities only when asked for (labels from float16 probabilities could differ at ties).
    with Segmenter(package, backend=backend, output="logits", channels=channels,
                   overlap=request.overlap, tta=request.tta) as segmenter:
        logits = segmenter.segment(volume)
        summary = segmenter.last_summary.line() if segmenter.last_summary else ""
    activation = package.manifest.activation
    probabilities = OutputHead(activation, "probabilities").from_logits(logits) if request.probabilities else None
    return SegmentResult(labels=OutputHead(activation, "labels").from_logits(logits), probabilities=probabilities,
                         classes=list(package.manifest.classes), model=package.name, summary=summary)
