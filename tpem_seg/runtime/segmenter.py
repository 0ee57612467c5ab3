"""Segmenter: a model package, a backend and tile settings; volumes in, labels out.

``segment`` works on arrays, ``segment_file`` streams a file to a file with memory bounded by a
z-slab, or by a block (:mod:`~tpem_seg.runtime.blocks`) where planes are wide or the volume is
resampled. The CLI calls exactly these.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from tpem_seg.errors import InputError
from tpem_seg.io import Volume, open_writer, read_volume
from tpem_seg.models.package import ModelPackage, open_package
from tpem_seg.runtime.backends import Backend, create_backend
from tpem_seg.runtime.blocks import BLOCK_YX, default_block, output_array, run_block, run_blocks
from tpem_seg.runtime.engine import RunState, TileEngine
from tpem_seg.runtime.normalize import Normalizer, fit_normalizer
from tpem_seg.runtime.pipeline import BackgroundWriter, Box, TilePlan, make_plan
from tpem_seg.runtime.resample import ResampledVolume, needs_resampling
from tpem_seg.runtime.settings import RunSettings, TileOptions
from tpem_seg.runtime.uncertainty import UncertaintyPlan, plan_uncertainty

log = logging.getLogger(__name__)

__all__ = ["RunInputs", "RunSummary", "Segmenter", "TileOptions"]


@dataclass
class RunInputs:
    """What a run over one volume works on, resolved once (:meth:`Segmenter.prepare`).

    volume: the input; source: what the tiles are read from (the input, or a
    :class:`~tpem_seg.runtime.resample.ResampledVolume` of it at the model's voxel size); channels: the
    source's channels feeding the model (None: all, in order); normalizer: fitted once over the
    source; grid: the global tile plan over the source; resampled: whether the source is resampled.
    """

    volume: Volume
    source: object
    channels: list[int] | None
    normalizer: Normalizer
    grid: TilePlan
    resampled: bool

    @property
    def out_shape(self) -> tuple[int, int, int] | None:
        """The output grid when it differs from the source's (resampled), else None."""
        return self.volume.shape_zyx if self.resampled else None


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
        if "blocks" in self.extra:
            skipped += f" in {self.extra['blocks']} blocks (x{self.extra['redundancy']:.2f} tiles)"
        spread = self.extra.get("uncertainty")
        spread = f", uncertainty by {spread['method']} ({spread['passes']} passes)" if spread else ""
        return (f"{shape} voxels in {self.seconds:.2f} s ({self.voxels_per_second / 1e6:.2f} Mvox/s), "
                f"{self.tiles} tiles{skipped}, {self.backend}{', resampled' if self.resampled else ''}{spread}")


class Segmenter:
    """Segment volumes with a model package.

    Args:
        model: a bundled package name, a package path, or an opened :class:`ModelPackage`.
        backend: ``auto``, ``torch``, ``onnxruntime`` or ``tensorrt``, or a configured
            :class:`~tpem_seg.runtime.backends.Backend` instance for this package (then ``device``,
            ``precision`` and ``backend_options`` are the backend's own).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` or ``bf16`` (what the backend supports).
        output: ``labels`` (uint8 class indices), ``probabilities`` (float16, class axis first) or
            ``logits`` (float32 blended network outputs, class axis first; arrays only).
        channels: which input channels feed the model, in the model's order (default: all).
        resample: resample to the package's voxel size when the input's differs.
        progress: show a progress bar.
        block: ``"auto"``, ``"off"`` or a block core ``(z, y, x)`` in output voxels: run block by
            block, memory set by the block, output bit-identical (see
            :class:`~tpem_seg.runtime.settings.RunSettings`).
        mc_passes: Monte-Carlo dropout passes per tile when a run also makes an uncertainty map
            (``uncertainty=`` of :meth:`segment` / :meth:`segment_file`).
        backend_options: backend-specific options, passed on to
            :func:`~tpem_seg.runtime.backends.create_backend` (e.g. the torch backend's compile,
            cuda_graphs, channels_last, cast_weights).
        **tile_options: fields of :class:`TileOptions` (overlap, batch_size, tta, sigma_scale,
            skip_empty, empty_threshold).

    Thread safety: one Segmenter runs one volume at a time. Calls from several threads are
    serialised by a lock (each waits for the one before; results are as if called in turn), because
    a backend's session or GPU context is not shared between calls. For volumes in parallel, make
    one Segmenter per thread.

    The settings are kept as one frozen :class:`~tpem_seg.runtime.settings.RunSettings`
    (``settings``); each run keeps its own state. When the backend runs on CUDA through torch
    tensors (the torch backend on a GPU), tiles go through the GPU path
    (:mod:`tpem_seg.runtime.gpu`): blending and the argmax run on the GPU and only the outputs
    come back.
    """

    def __init__(self, model: str | os.PathLike | ModelPackage, backend: str | Backend = "auto", device: str = "auto",
                 precision: str = "fp32", *, output: str = "labels", channels: Sequence[int] | None = None,
                 resample: bool = True, progress: bool = False, backend_options: dict | None = None,
                 block: Sequence[int] | str = "auto", mc_passes: int = 20, **tile_options):
        self.settings = RunSettings(output=output, channels=channels, resample=resample,
                                    tiles=TileOptions(**tile_options), block=block, mc_passes=mc_passes)
        self.package = model if isinstance(model, ModelPackage) else open_package(model)
        if isinstance(backend, Backend):
            if backend.input_spec.tile != self.package.manifest.tile or \
                    backend.input_spec.channels != self.package.manifest.config.in_channels:
                raise InputError(f"backend {backend.describe()} was made for another network than {self.package.name}")
            self.backend = backend
        else:
            # The run's batch size is the backend's too: a backend compiled for a fixed batch (OpenVINO)
            # then compiles for it instead of padding every call.
            batch = {"batch_size": self.settings.tiles.batch_size} if self.settings.tiles.batch_size else {}
            self.backend = create_backend(backend, self.package, device=device, precision=precision,
                                          **{**batch, **(backend_options or {})})
        if self.settings.tiles.skip_empty and self.package.manifest.normalization.mode == "none":
            raise InputError(f"skip_empty needs an intensity scale, but {self.package.name} does no normalisation; "
                             f"drop --skip-empty")
        self.progress = progress
        self.last_summary: RunSummary | None = None
        self._lock = threading.RLock()  # one run at a time (see the class docstring)

    # -- public API ---------------------------------------------------------------------------------

    def segment(self, data: np.ndarray | Volume, axes: str | None = None, spacing: Sequence[float] | None = None,
                uncertainty: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Labels ``(Z, Y, X)`` uint8, probabilities ``(K, Z, Y, X)`` float16 or logits (float32), for an array.

        A numpy array needs ``axes`` unless it is 3D (ZYX). With ``uncertainty``, the pair (that
        output, an uncertainty map ``(Z, Y, X)`` float32 in [0, 1]); the output is the same as without
        (:mod:`~tpem_seg.runtime.uncertainty`; ``last_summary.extra["uncertainty"]`` says how it was
        measured).
        """
        with self._lock:
            return self._segment_array(data, axes, spacing, uncertainty)

    def _segment_array(self, data: np.ndarray | Volume, axes: str | None, spacing: Sequence[float] | None,
                       uncertainty: bool) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        volume = data if isinstance(data, Volume) else Volume(
            np.asarray(data), axes or _default_axes(np.ndim(data)), spacing)
        if spacing is not None and isinstance(data, Volume):
            volume = Volume(data.data, data.axes, spacing, data.channel_names)
        shape = volume.shape_zyx
        output = self.settings.output
        k = self.package.manifest.config.out_channels
        dtype = {"labels": np.uint8, "probabilities": np.float16, "logits": np.float32}[output]
        out = np.zeros(shape if output == "labels" else (k, *shape), dtype=dtype)
        plan = self._uncertainty_plan() if uncertainty else None
        spread = np.zeros(shape, dtype=np.float32) if plan else None

        def store(first: int, block) -> None:
            if plan is not None:
                block, part = block
                spread[first:first + part.shape[0]] = part
            out[..., first:first + block.shape[-3], :, :] = block

        self.last_summary = self._segment_volume(volume, store, plan)
        return (out, spread) if plan is not None else out

    def segment_file(self, src: str | os.PathLike, dst: str | os.PathLike, axes: str | None = None,
                     spacing: Sequence[float] | None = None,
                     uncertainty: str | os.PathLike | None = None, pyramid: int = 1) -> RunSummary:
        """Segment the volume at ``src`` into ``dst`` (.tif/.tiff, .npy or .zarr), streaming.

        The output carries the input's voxel size; it appears under ``dst`` only
        once complete. ``uncertainty``: also write an uncertainty map there (``(Z, Y, X)`` float32,
        the input's voxel size; its metadata say how it was measured, see :meth:`segment`).
        ``pyramid``: OME-Zarr pyramid levels of ``dst`` in all, for viewers (level n halves y and x
        n times; :mod:`tpem_seg.io.pyramid`).
        """
        with self._lock:
            return self._segment_file(src, dst, axes, spacing, uncertainty, pyramid)

    def _segment_file(self, src: str | os.PathLike, dst: str | os.PathLike, axes: str | None,
                      spacing: Sequence[float] | None, uncertainty: str | os.PathLike | None,
                      pyramid: int) -> RunSummary:
        if self.settings.output == "logits":
            raise InputError("logits output is for arrays (Segmenter.segment); write labels or probabilities")
        if uncertainty is not None and os.path.abspath(uncertainty) == os.path.abspath(dst):
            raise InputError(f"--uncertainty {uncertainty} is the output path too; give it a name of its own")
        volume = read_volume(src, axes=axes, spacing=spacing)
        shape = volume.shape_zyx
        k = self.package.manifest.config.out_channels
        probabilities = self.settings.output == "probabilities"
        plan = self._uncertainty_plan() if uncertainty is not None else None
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(open_writer(
                dst, shape=(k, *shape) if probabilities else shape, dtype=np.float16 if probabilities else np.uint8,
                axes="CZYX" if probabilities else "ZYX", spacing=volume.spacing,
                channel_names=self.package.manifest.classes if probabilities else None,
                label_names=None if probabilities else self.package.manifest.classes, levels=pyramid))
            spread = None if plan is None else stack.enter_context(open_writer(
                uncertainty, shape=shape, dtype=np.float32, axes="ZYX", spacing=volume.spacing,
                properties=plan.metadata()))

            def write(item) -> None:
                kind, *parts = item
                if kind == "block":
                    writer.write_block(*parts)
                elif spread is None:
                    writer.write(parts[0])
                else:
                    writer.write(parts[0][0])
                    spread.write(parts[0][1])
            background = BackgroundWriter(write)

            def slab_done(first: int, block) -> None:
                background.submit(("slab", block))

            def block_done(core: Box, block: np.ndarray) -> None:
                background.submit(("block", core, block))
            # a chunked output takes each block as it is done: no row of whole planes is held
            by_block = block_done if writer.takes_blocks and spread is None else None
            try:
                summary = self._segment_volume(volume, slab_done, plan, by_block)
            except BaseException:
                background.cancel()  # the writers then remove their partial files
                raise
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

    def _engine(self, uncertainty: UncertaintyPlan | None = None) -> TileEngine:
        manifest = self.package.manifest
        options = self.settings.tiles
        device_tensors = self.backend.supports_device_tensors
        mc = uncertainty is not None and uncertainty.method == "mc-dropout"
        if mc:
            self.backend.start_mc()  # every run draws the same dropout masks
        return TileEngine(self.backend.infer, manifest.tile, manifest.config.out_channels, manifest.activation,
                          options, options.batch_size or self.backend.default_batch_size(),
                          backend=self.backend if device_tensors else None, uncertainty=uncertainty,
                          infer_mc=self.backend.infer_mc if mc else None)

    def _uncertainty_plan(self) -> UncertaintyPlan:
        plan = plan_uncertainty(self.backend, self.settings.mc_passes)
        log.info("uncertainty: %s, %d passes per tile (%s)", plan.method, plan.passes, plan.reason)
        return plan

    def prepare(self, volume: Volume, normalizer: Normalizer | None = None) -> RunInputs:
        """Check ``volume`` against the model, resample it where its voxel size differs, fit the
        normaliser (unless given: a distributed run fits it once on its driver) and lay the global
        tile plan. Cheap: nothing is read but the normaliser's sample."""
        channels = self._check_channels(volume)
        manifest = self.package.manifest
        resampled = self.settings.resample and needs_resampling(volume.spacing, manifest.spacing)
        source, source_channels = volume, channels
        if resampled:
            log.info("resampling from %s µm to the model's %s µm, block by block", volume.spacing, manifest.spacing)
            source, source_channels = ResampledVolume(volume, manifest.spacing, channels), None
        elif self.settings.resample and volume.spacing is None and manifest.spacing is not None:
            log.warning("input voxel size unknown; assuming the model's %s µm (give --spacing to resample)",
                        manifest.spacing)
        if normalizer is None:
            normalizer = fit_normalizer(source, manifest.normalization, source_channels)
        grid = make_plan(source.shape_zyx, manifest.tile, self.settings.tiles.overlap)
        return RunInputs(volume, source, source_channels, normalizer, grid, resampled)

    def segment_block(self, inputs: RunInputs, core: Box) -> tuple[np.ndarray, RunState]:
        """The output of the output voxels ``core`` (``(lo, hi)`` per axis z, y, x) of a prepared run,
        bit-identical to the same voxels of a whole run, and what it computed. Labels ``(dz, dy, dx)``
        uint8, probabilities ``(K, dz, dy, dx)`` float16 or logits float32."""
        with self._lock:
            self.backend.load()
            state = RunState()
            target = output_array(self.settings.output, self.package.manifest.config.out_channels,
                                  [hi - lo for lo, hi in core])
            run_block(self._engine(), inputs.source, inputs.grid, inputs.normalizer, inputs.channels,
                      self.settings.output, core, target, state, inputs.out_shape)
            return target, state

    def _segment_volume(self, volume: Volume, sink: Callable[[int, np.ndarray], None],
                        uncertainty: UncertaintyPlan | None = None,
                        block_sink: Callable[[Box, np.ndarray], None] | None = None) -> RunSummary:
        """Run ``volume`` through the network; ``sink(first_plane, slab)`` gets the output in z order
        (with ``uncertainty``: ``(slab, uncertainty map)``); on the block path, ``block_sink(core,
        output)``, where given, gets each block's output instead."""
        started = time.perf_counter()
        inputs = self.prepare(volume)
        self.backend.load()
        state = RunState()
        output = self.settings.output
        source, source_channels, grid, resampled = inputs.source, inputs.channels, inputs.grid, inputs.resampled
        engine = self._engine(uncertainty)
        block = self._block(volume.shape_zyx, resampled, uncertainty is not None)
        extra: dict = {}
        if block is None:
            engine.run(source, grid, inputs.normalizer, source_channels, output, sink, state, self.progress)
        else:
            extra["blocks"] = run_blocks(engine, source, grid, inputs.normalizer, source_channels, output, block,
                                         sink, state, out_shape=inputs.out_shape, progress=self.progress,
                                         block_sink=block_sink)
            extra["block"] = block
            extra["redundancy"] = round(state.tiles / grid.n_tiles, 4)
        summary = RunSummary(volume.shape_zyx, state.tiles, 0.0, self.backend.describe(), resampled=resampled)
        summary.extra.update(extra, batch_size=state.batch_size)
        if self.settings.tiles.skip_empty:
            summary.extra["skipped_tiles"] = state.skipped
        if uncertainty is not None:
            summary.extra["uncertainty"] = {"method": uncertainty.method, "passes": uncertainty.passes,
                                            "reason": uncertainty.reason}
        summary.seconds = time.perf_counter() - started
        log.info("%s", summary.line())
        return summary

    def _block(self, shape: tuple[int, int, int], resampled: bool,
               uncertainty: bool = False) -> tuple[int, int, int] | None:
        """The block core for a run over an output of ``shape`` (None: one pass in z-slabs).

        An uncertainty run goes in z-slabs: blocks (and the resampling that runs through them) do
        not carry the uncertainty channels.
        """
        block = self.settings.block
        if uncertainty:
            if resampled:
                raise InputError(f"--uncertainty needs the volume at the model's voxel size "
                                 f"{self.package.manifest.spacing} µm; resample it first, or pass --no-resample")
            if isinstance(block, tuple):
                raise InputError("--uncertainty runs in z-slabs; drop --block (or use --block off)")
            return None
        wide = max(shape[1:]) > BLOCK_YX
        if not isinstance(block, tuple) and not resampled and (block == "off" or not wide):
            return None
        return self.block_size(shape)

    def block_size(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The block core over an output of ``shape``: the one set (clipped to the volume), else
        :func:`~tpem_seg.runtime.blocks.default_block` for this output."""
        block = self.settings.block
        if isinstance(block, tuple):
            return tuple(min(b, n) for b, n in zip(block, shape))
        k = self.package.manifest.config.out_channels
        voxel_bytes = {"labels": 1, "probabilities": 2 * k, "logits": 4 * k}[self.settings.output]
        return default_block(shape, self.package.manifest.tile, voxel_bytes)

    def _check_channels(self, volume: Volume) -> list[int] | None:
        manifest = self.package.manifest
        if 0 in volume.data.shape:
            raise InputError(f"the volume is empty (shape {tuple(volume.data.shape)}); check the input file")
        wanted = manifest.config.in_channels
        have = volume.n_channels
        chosen = self.settings.channels
        if chosen is not None:
            bad = [c for c in chosen if not 0 <= c < have]
            if bad:
                raise InputError(f"--channels {','.join(map(str, chosen))} names channel(s) {bad} but the "
                                 f"volume has {have} (0..{have - 1})")
            if len(chosen) != wanted:
                raise InputError(f"--channels picks {len(chosen)} channel(s) but model {manifest.name} takes "
                                 f"{wanted} ({', '.join(manifest.channels)})")
            return list(chosen)
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

