"""Segmenter: a model package, a backend and tile settings; volumes in, labels out.

``segment`` works on arrays, ``segment_file`` streams a file to a file with
memory bounded by a z-slab. The CLI calls exactly these.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from tpem_seg.errors import InputError
from tpem_seg.io import Volume, open_writer, read_volume
from tpem_seg.models.package import ModelPackage, open_package
from tpem_seg.runtime.backends import create_backend
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.runtime.outputs import OUTPUTS, finish
from tpem_seg.runtime.pipeline import BackgroundWriter, RowDone, TileBatch, iter_tiles, make_plan, prefetch
from tpem_seg.runtime.resample import needs_resampling, resample_logits, resample_volume
from tpem_seg.runtime.stitch import Stitcher
from tpem_seg.runtime.tiling import gaussian_weights

log = logging.getLogger(__name__)

#: Flip combinations over the spatial axes of a (N, C, D, H, W) batch (nnU-Net's mirroring).
TTA_FLIPS = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))


@dataclass(frozen=True)
class TileOptions:
    """How tiles are laid and blended.

    overlap: fraction of a tile shared with its neighbour, per axis, in [0, 1).
    batch_size: tiles per backend call (None: 4 on a GPU, 2 on a CPU).
    tta: average the 8 flips of every tile (8x the compute).
    sigma_scale: Gaussian blending sigma as a fraction of the tile (1/8).
    """

    overlap: float = 0.25
    batch_size: int | None = None
    tta: bool = False
    sigma_scale: float = 0.125

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"overlap {self.overlap} must be in [0, 1), e.g. --overlap 0.25")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size} must be at least 1")
        if self.sigma_scale <= 0:
            raise InputError(f"sigma_scale {self.sigma_scale} must be positive")


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
        return (f"{shape} voxels in {self.seconds:.2f} s ({self.voxels_per_second / 1e6:.2f} Mvox/s), "
                f"{self.tiles} tiles, {self.backend}{', resampled' if self.resampled else ''}")


class Segmenter:
    """Segment volumes with a model package.

    Args:
        model: a bundled package name, a package path, or an opened :class:`ModelPackage`.
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``tensorrt``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` or ``bf16`` (what the backend supports).
        output: ``labels`` (uint8 class indices), ``probabilities`` (float16, class axis first) or
            ``logits`` (float32 blended network outputs, class axis first; arrays only).
        channels: which input channels feed the model, in the model's order (default: all).
        resample: resample to the package's voxel size when the input's differs.
        progress: show a progress bar.
        **tile_options: fields of :class:`TileOptions` (overlap, batch_size, tta, sigma_scale).
    """

    def __init__(self, model: str | os.PathLike | ModelPackage, backend: str = "auto", device: str = "auto",
                 precision: str = "fp32", *, output: str = "labels", channels: Sequence[int] | None = None,
                 resample: bool = True, progress: bool = False, **tile_options):
        if output not in OUTPUTS:
            raise InputError(f"output {output!r} must be one of {OUTPUTS}")
        self.package = model if isinstance(model, ModelPackage) else open_package(model)
        self.backend = create_backend(backend, self.package, device=device, precision=precision)
        self.options = TileOptions(**tile_options)
        self.output = output
        self.channels = list(channels) if channels is not None else None
        self.resample = resample
        self.progress = progress
        self.last_summary: RunSummary | None = None

    # -- public API ---------------------------------------------------------------------------------

    def segment(self, data: np.ndarray | Volume, axes: str | None = None,
                spacing: Sequence[float] | None = None) -> np.ndarray:
        """Labels ``(Z, Y, X)`` uint8, probabilities ``(K, Z, Y, X)`` float16 or logits (float32), for an array.

        A numpy array needs ``axes`` unless it is 3D (ZYX).
        """
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
        if self.output == "logits":
            raise InputError("logits output is for arrays (Segmenter.segment); write labels or probabilities")
        volume = read_volume(src, axes=axes, spacing=spacing)
        shape = volume.shape_zyx
        k = self.package.manifest.config.out_channels
        probabilities = self.output == "probabilities"
        with open_writer(dst, shape=(k, *shape) if probabilities else shape,
                         dtype=np.float16 if probabilities else np.uint8,
                         axes="CZYX" if probabilities else "ZYX", spacing=volume.spacing,
                         channel_names=self.package.manifest.classes if probabilities else None) as writer:
            background = BackgroundWriter(writer.write)
            try:
                summary = self._segment_volume(volume, background.submit)
            finally:
                background.close()
        self.last_summary = summary
        return summary

    def close(self) -> None:
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
                log.info("input voxel size unknown; assuming the model's %s µm (give --spacing to resample)",
                         manifest.spacing)
            tiles = self._stitch(volume, channels, lambda logits: sink(finish(logits, manifest.activation,
                                                                                self.output)))
            summary = RunSummary(volume.shape_zyx, tiles, 0.0, self.backend.describe())
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
        tiles = self._stitch(resampled, None, parts.append)
        logits = resample_logits(np.concatenate(parts, axis=1), volume.shape_zyx)
        sink(finish(logits, manifest.activation, self.output))
        return RunSummary(volume.shape_zyx, tiles, 0.0, self.backend.describe(), resampled=True)

    def _stitch(self, volume: Volume, channels: list[int] | None,
                emit: Callable[[np.ndarray], None]) -> int:
        """Tile, infer and blend ``volume``; call ``emit(logits (K, dz, Y, X))`` per finished slab, in z order."""
        manifest = self.package.manifest
        normalizer = fit_normalizer(volume, manifest.normalization, channels)
        plan = make_plan(volume.shape_zyx, manifest.tile, self.options.overlap)
        stitcher = Stitcher(manifest.config.out_channels, plan.padded, plan.tile,
                            gaussian_weights(plan.tile, self.options.sigma_scale))
        batch_size = self.options.batch_size or (4 if self.backend.device.startswith("cuda") else 2)
        (pz, _), (py, _), (px, _) = plan.pads
        z_end = pz + plan.shape[0]
        with tqdm(total=plan.n_tiles, unit="tile", desc="segment", disable=not self.progress,
                  leave=False) as bar:
            for item in prefetch(iter_tiles(volume, plan, normalizer, channels, batch_size)):
                if isinstance(item, TileBatch):
                    stitcher.add(self._predict(item.tiles), item.origins)
                    bar.update(len(item.origins))
                    continue
                assert isinstance(item, RowDone)
                finished = stitcher.advance(item.next_z)
                if finished is None:
                    continue
                z0, logits = finished
                lo, hi = max(z0, pz), min(z0 + logits.shape[1], z_end)
                if hi > lo:
                    emit(logits[:, lo - z0:hi - z0, py:py + plan.shape[1], px:px + plan.shape[2]])
        return plan.n_tiles

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

