"""Segmenter: a model package, a backend and tile settings; volumes in, labels out.

``segment`` works on arrays, ``segment_file`` streams a file to a file with
memory bounded by a z-slab. The CLI calls exactly these.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from tpem_seg.errors import InputError
from tpem_seg.io import Volume, open_writer, read_volume
from tpem_seg.models.package import ModelPackage, open_package
from tpem_seg.runtime.backends import Backend, create_backend
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.runtime.outputs import OUTPUTS, finish
from tpem_seg.runtime.pipeline import BackgroundWriter, RowDone, TileBatch, iter_tiles, make_plan, prefetch
from tpem_seg.runtime.resample import needs_resampling, resample_logits, resample_volume
from tpem_seg.runtime.stitch import Stitcher, finish_sums
from tpem_seg.runtime.tiling import gaussian_weights

log = logging.getLogger(__name__)

#: Flip combinations over the spatial axes of a (N, C, D, H, W) batch (nnU-Net's mirroring).
TTA_FLIPS = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))

#: Logit margin given to background on skipped (empty) tiles: softmax puts 1 - 2e-4 on background
#: for 3 classes (sigmoid: every foreground channel at -10, probability 4.5e-5).
EMPTY_LOGIT = 10.0


@dataclass(frozen=True)
class TileOptions:
    """How tiles are laid and blended.

    overlap: fraction of a tile shared with its neighbour, per axis, in [0, 1).
    batch_size: tiles per backend call (None: the backend's default: on a GPU the torch path picks it
        from free memory, others 4; on a CPU 2, or up to 8 small tiles for torch bf16).
    tta: average the 8 flips of every tile (8x the compute).
    sigma_scale: Gaussian blending sigma as a fraction of the tile (1/8).
    skip_empty: do not run the network on tiles without foreground; they get background logits
        (:data:`EMPTY_LOGIT`). A tile is empty when, in every channel, its 99th percentile of
        normalised intensity (0 = the package's low percentile or range end, 1 = the high one) is
        below ``empty_threshold`` (:func:`~tpem_seg.runtime.pipeline.empty_tiles`). Needs a
        percentile or range normalisation.
    empty_threshold: normalised intensity a tile's 99th percentile must reach to count as non-empty.
    """

    overlap: float = 0.25
    batch_size: int | None = None
    tta: bool = False
    sigma_scale: float = 0.125
    skip_empty: bool = False
    empty_threshold: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"overlap {self.overlap} must be in [0, 1), e.g. --overlap 0.25")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size} must be at least 1")
        if self.sigma_scale <= 0:
            raise InputError(f"sigma_scale {self.sigma_scale} must be positive")
        if not 0.0 < self.empty_threshold < 1.0:
            raise InputError(f"empty_threshold {self.empty_threshold} must be in (0, 1), e.g. 0.05")


@dataclass
class RunSummary:
    """What one run did, for the CLI's closing line and for benchmarks."""

    shape: tuple[int, int, int]
    tiles: int
    seconds: float
    backend: str
    resampled: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        shape = "x".join(map(str, self.shape))
        skipped = f" ({self.extra['skipped_tiles']} empty, skipped)" if "skipped_tiles" in self.extra else ""
        return (f"{shape} voxels in {self.seconds:.2f} s ({self.voxels_per_second / 1e6:.2f} Mvox/s), "
                f"{self.tiles} tiles{skipped}, {self.backend}{', resampled' if self.resampled else ''}")


class Segmenter:
    """Segment volumes with a model package.

    Args:
        model: a bundled package name, a package path, or an opened :class:`ModelPackage`.
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``tensorrt``, or a configured
            :class:`~tpem_seg.runtime.backends.Backend` instance for this package (then ``device``
            and ``precision`` are the backend's own).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` or ``bf16`` (what the backend supports).
        output: ``labels`` (uint8 class indices), ``probabilities`` (float16, class axis first) or
            ``logits`` (float32 blended network outputs, class axis first; arrays only).
        channels: which input channels feed the model, in the model's order (default: all).
        resample: resample to the package's voxel size when the input's differs.
        progress: show a progress bar.
        **tile_options: fields of :class:`TileOptions` (overlap, batch_size, tta, sigma_scale,
            skip_empty, empty_threshold).

    Thread safety: one Segmenter runs one volume at a time. Calls from several threads are
    serialised by a lock (each waits for the one before; results are as if called in turn), because
    a run keeps its state on the Segmenter and a backend's session or GPU context is not shared
    between calls. For volumes in parallel, make one Segmenter per thread.

    When the backend runs on CUDA through torch tensors (the torch backend on a GPU), tiles go
    through the GPU path (:mod:`tpem_seg.runtime.gpu`): blending and the argmax run on the GPU
    and only the outputs come back.
    """

    def __init__(self, model: str | os.PathLike | ModelPackage, backend: str | Backend = "auto", device: str = "auto",
                 precision: str = "fp32", *, output: str = "labels", channels: Sequence[int] | None = None,
                 resample: bool = True, progress: bool = False, **tile_options):
        if output not in OUTPUTS:
            raise InputError(f"output {output!r} must be one of {OUTPUTS}")
        self.package = model if isinstance(model, ModelPackage) else open_package(model)
        if isinstance(backend, Backend):
            if backend.input_spec.tile != self.package.manifest.tile or \
                    backend.input_spec.channels != self.package.manifest.config.in_channels:
                raise InputError(f"backend {backend.describe()} was made for another network than {self.package.name}")
            self.backend = backend
        else:
            self.backend = create_backend(backend, self.package, device=device, precision=precision)
        self.options = TileOptions(**tile_options)
        if self.options.skip_empty and self.package.manifest.normalization.mode == "none":
            raise InputError(f"skip_empty needs an intensity scale, but {self.package.name} does no normalisation; "
                             f"drop --skip-empty")
        self.output = output
        self.channels = list(channels) if channels is not None else None
        self.resample = resample
        self.progress = progress
        self.last_summary: RunSummary | None = None
        self._skipped = 0  # tiles of the current run skipped as empty
        self._batch_size: int | None = None  # tiles per network call in the current run
        self._lock = threading.RLock()  # one run at a time (see the class docstring)

    # -- public API ---------------------------------------------------------------------------------

    def segment(self, data: np.ndarray | Volume, axes: str | None = None,
                spacing: Sequence[float] | None = None) -> np.ndarray:
        """Labels ``(Z, Y, X)`` uint8, probabilities ``(K, Z, Y, X)`` float16 or logits (float32), for an array.

        A numpy array needs ``axes`` unless it is 3D (ZYX).
        """
        with self._lock:
            return self._segment_array(data, axes, spacing)

    def _segment_array(self, data: np.ndarray | Volume, axes: str | None,
                       spacing: Sequence[float] | None) -> np.ndarray:
        volume = data if isinstance(data, Volume) else Volume(
            np.asarray(data), axes or _default_axes(np.ndim(data)), spacing)
        if spacing is not None and isinstance(data, Volume):
            volume = Volume(data.data, data.axes, spacing, data.channel_names)
        shape = volume.shape_zyx
        k = self.package.manifest.config.out_channels
        dtype = {"labels": np.uint8, "probabilities": np.float16, "logits": np.float32}[self.output]
        out = np.zeros(shape if self.output == "labels" else (k, *shape), dtype=dtype)
        cursor = [0]

        def store(block: np.ndarray) -> None:
            dz = block.shape[-3]
            out[..., cursor[0]:cursor[0] + dz, :, :] = block
            cursor[0] += dz

        self.last_summary = self._segment_volume(volume, store)
        return out

    def segment_file(self, src: str | os.PathLike, dst: str | os.PathLike, axes: str | None = None,
                     spacing: Sequence[float] | None = None) -> RunSummary:
        """Segment the volume at ``src`` into ``dst`` (.tif/.tiff, .npy or .zarr), streaming.

        The output carries the input's voxel size; it appears under ``dst`` only
        once complete.
        """
        with self._lock:
            return self._segment_file(src, dst, axes, spacing)

    def _segment_file(self, src: str | os.PathLike, dst: str | os.PathLike, axes: str | None,
                      spacing: Sequence[float] | None) -> RunSummary:
        if self.output == "logits":
            raise InputError("logits output is for arrays (Segmenter.segment); write labels or probabilities")
        volume = read_volume(src, axes=axes, spacing=spacing)
        shape = volume.shape_zyx
        k = self.package.manifest.config.out_channels
        probabilities = self.output == "probabilities"
        with open_writer(dst, shape=(k, *shape) if probabilities else shape,
                         dtype=np.float16 if probabilities else np.uint8,
                         axes="CZYX" if probabilities else "ZYX", spacing=volume.spacing,
                         channel_names=self.package.manifest.classes if probabilities else None,
                         label_names=None if probabilities else self.package.manifest.classes) as writer:
            background = BackgroundWriter(writer.write)
            try:
                summary = self._segment_volume(volume, background.submit)
            finally:
                background.close()
        self.last_summary = summary
        return summary

    def close(self) -> None:
        with self._lock:  # not under a running call
            self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the run ------------------------------------------------------------------------------------

    def _segment_volume(self, volume: Volume, sink: Callable[[np.ndarray], None]) -> RunSummary:
        channels = self._check_channels(volume)
        manifest = self.package.manifest
        started = time.perf_counter()
        self.backend.load()
        if self.resample and needs_resampling(volume.spacing, manifest.spacing):
            summary = self._segment_resampled(volume, channels, sink)
        else:
            if self.resample and volume.spacing is None and manifest.spacing is not None:
                log.warning("input voxel size unknown; assuming the model's %s µm (give --spacing to resample)",
                            manifest.spacing)
            tiles = self._stitch(volume, channels, sink)
            summary = RunSummary(volume.shape_zyx, tiles, 0.0, self.backend.describe())
        summary.extra["batch_size"] = self._batch_size
        if self.options.skip_empty:
            summary.extra["skipped_tiles"] = self._skipped
        summary.seconds = time.perf_counter() - started
        log.info("%s", summary.line())
        return summary

    def _segment_resampled(self, volume: Volume, channels: list[int] | None,
                           sink: Callable[[np.ndarray], None]) -> RunSummary:
        """Resample to the model's voxel size, segment, bring the logits back (whole volume in memory)."""
        manifest = self.package.manifest
        log.info("resampling from %s µm to the model's %s µm (whole volume in memory)",
                 volume.spacing, manifest.spacing)
        resampled = resample_volume(volume, manifest.spacing, channels)
        parts: list[np.ndarray] = []
        tiles = self._stitch(resampled, None, parts.append, output="logits")
        logits = resample_logits(np.concatenate(parts, axis=1), volume.shape_zyx)
        sink(finish(logits, manifest.activation, self.output))
        return RunSummary(volume.shape_zyx, tiles, 0.0, self.backend.describe(), resampled=True)

    def _stitch(self, volume: Volume, channels: list[int] | None, emit: Callable[[np.ndarray], None],
                output: str | None = None) -> int:
        """Tile, infer and blend ``volume``; call ``emit(block)`` per finished slab, in z order.

        ``block`` is the ``output`` (default: the Segmenter's) of the slab's ``dz`` planes: labels
        ``(dz, Y, X)`` uint8, probabilities ``(K, dz, Y, X)`` float16 or logits ``(K, dz, Y, X)``
        float32. Returns the number of tiles.
        """
        manifest = self.package.manifest
        output = output or self.output
        normalizer = fit_normalizer(volume, manifest.normalization, channels)
        plan = make_plan(volume.shape_zyx, manifest.tile, self.options.overlap)
        weights = gaussian_weights(plan.tile, self.options.sigma_scale)
        threshold = self.options.empty_threshold if self.options.skip_empty else None
        self._skipped = 0
        if getattr(self.backend, "supports_device_tensors", False):
            from tpem_seg.runtime import gpu  # imports torch: only for backends that already run on it

            run = gpu.GpuStitchRun(self.backend, plan, weights, manifest.config.out_channels, manifest.activation,
                                   output, self.options, background=self._background_logits())
            with tqdm(total=plan.n_tiles, unit="tile", desc="segment", disable=not self.progress, leave=False) as bar:
                run.run(volume, normalizer, channels, emit, bar.update)
            self._skipped, self._batch_size = run.skipped, run.backoff.batch_size
            return plan.n_tiles
        stitcher = Stitcher(manifest.config.out_channels, plan.padded, plan.tile, weights)
        batch_size = self.options.batch_size or self.backend.default_batch_size()
        self._batch_size = batch_size
        with tqdm(total=plan.n_tiles, unit="tile", desc="segment", disable=not self.progress,
                  leave=False) as bar:
            for item in prefetch(iter_tiles(volume, plan, normalizer, channels, batch_size, threshold)):
                if isinstance(item, TileBatch):
                    self._add_batch(stitcher, item)
                    bar.update(len(item.origins))
                    continue
                assert isinstance(item, RowDone)
                finished = stitcher.advance_raw(item.next_z)
                if finished is None:
                    continue
                z0, sums, norm = finished
                part = plan.volume_part(z0, sums.shape[1])
                if part is not None:
                    crop = part[1]
                    emit(finish_sums(sums[(slice(None), *crop)], norm[crop], manifest.activation, output))
        return plan.n_tiles

    def _add_batch(self, stitcher: Stitcher, batch: TileBatch) -> None:
        """Infer the batch's non-empty tiles and add them; empty ones get background logits."""
        empty = batch.empty
        if empty is None or not empty.any():
            stitcher.add(self._predict(batch.tiles), batch.origins)
            return
        full = ~empty
        if full.any():
            stitcher.add(self._predict(batch.tiles[full]), [o for o, f in zip(batch.origins, full) if f])
        stitcher.add_constant(self._background_logits(), [o for o, e in zip(batch.origins, empty) if e])
        self._skipped += int(empty.sum())

    def _background_logits(self) -> list[float]:
        """Per-class logits of a skipped tile: background (class 0) by :data:`EMPTY_LOGIT` (softmax), or
        every foreground channel at ``-EMPTY_LOGIT`` (sigmoid, no background channel)."""
        k = self.package.manifest.config.out_channels
        if self.package.manifest.activation == "sigmoid":
            return [-EMPTY_LOGIT] * k
        return [EMPTY_LOGIT] + [0.0] * (k - 1)

    def _predict(self, tiles: np.ndarray) -> np.ndarray:
        """Logits for a batch; with TTA, the mean over the 8 flips (each flipped back)."""
        if not self.options.tta:
            return self.backend.infer(tiles)
        total = np.zeros((tiles.shape[0], self.package.manifest.config.out_channels, *tiles.shape[2:]),
                         dtype=np.float32)
        for axes in TTA_FLIPS:
            flipped = np.ascontiguousarray(np.flip(tiles, axes)) if axes else tiles
            logits = self.backend.infer(flipped)
            total += np.flip(logits, axes) if axes else logits
        return total / len(TTA_FLIPS)

    def _check_channels(self, volume: Volume) -> list[int] | None:
        manifest = self.package.manifest
        if 0 in volume.data.shape:
            raise InputError(f"the volume is empty (shape {tuple(volume.data.shape)}); check the input file")
        wanted = manifest.config.in_channels
        have = volume.n_channels
        if self.channels is not None:
            bad = [c for c in self.channels if not 0 <= c < have]
            if bad:
                raise InputError(f"--channels {','.join(map(str, self.channels))} names channel(s) {bad} but the "
                                 f"volume has {have} (0..{have - 1})")
            if len(self.channels) != wanted:
                raise InputError(f"--channels picks {len(self.channels)} channel(s) but model {manifest.name} takes "
                                 f"{wanted} ({', '.join(manifest.channels)})")
            return self.channels
        if have != wanted:
            example = ",".join(str(i) for i in range(wanted))
            raise InputError(f"the volume has {have} channel(s) but model {manifest.name} takes {wanted} "
                             f"({', '.join(manifest.channels)}); pick them in order with --channels, "
                             f"e.g. --channels {example}")
        return None


def _default_axes(ndim: int) -> str:
    if ndim == 3:
        return "ZYX"
    raise InputError(f"a {ndim}D array needs axes, e.g. axes='CZYX' (Python) or --axes CZYX (CLI)")

