"""Parity: does a deployed form of the network reproduce its reference on the same tiles?

Export compares ONNX Runtime against PyTorch (fp32, probabilities within 1e-4), an engine
build compares TensorRT against ONNX Runtime, and the GPU benchmark compares PyTorch
fp16/bf16 against fp32. All go through the runtime's own backends, so what is measured is
what users run. Tiles are network inputs ``(N, C, D, H, W)`` float32, already normalised:
uniform random tiles, and real-looking ones cut from a volume (the user's, or one from the
two-photon simulator, through :func:`tpem_seg.runtime.bench.inputs.simulated_stack`) normalised the way the runtime
normalises whole volumes. The comparison itself is :mod:`tpem_seg.runtime.compare`'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tpem_seg.export.errors import ExportError, ParityError
from tpem_seg.models.manifest import Manifest, NormalizationSpec
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.backends import Backend, BackendSpec, create_backend
from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend
from tpem_seg.runtime.compare import compare_logits

log = logging.getLogger(__name__)

#: fp32 export: ONNX Runtime's probabilities within this of PyTorch's, everywhere.
FP32_TOLERANCE = 1e-4
#: fp16 engine: TensorRT's probabilities within this of ONNX Runtime's fp32 ones.
FP16_TOLERANCE = 5e-2


@dataclass(frozen=True)
class ParityTiles:
    """Tiles ``(N, C, D, H, W)`` float32 and how many came from each source."""

    tiles: np.ndarray
    sources: dict[str, int]


@dataclass
class ParityReport:
    """How far ``candidate`` is from ``reference`` on the same tiles.

    max_abs_prob_diff / mean_abs_prob_diff: over all voxels and classes, after the package's
        output activation (softmax or sigmoid).
    max_abs_logit_diff: the same on raw logits.
    label_agreement: fraction of voxels whose predicted class is the same.
    tolerance: the bound on ``max_abs_prob_diff`` (None: measured only); passed: within it.
    seconds: inference time of each side (excluding loading), for context only.
    """

    reference: str
    candidate: str
    n_tiles: int
    sources: dict[str, int]
    max_abs_prob_diff: float
    mean_abs_prob_diff: float
    max_abs_logit_diff: float
    label_agreement: float
    tolerance: float | None = None
    passed: bool | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = "" if self.passed is None else (" (ok)" if self.passed else f" (FAILS tolerance {self.tolerance:g})")
        return (f"{self.candidate} vs {self.reference} on {self.n_tiles} tiles: max |dp| "
                f"{self.max_abs_prob_diff:.2e}, labels agree {100 * self.label_agreement:.4f}%{verdict}")


# -- tiles -------------------------------------------------------------------------------------------


def random_tiles(n: int, channels: int, tile: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """``(n, channels, *tile)`` uniform in [0, 1): the normalised input range, without structure."""
    return np.random.default_rng(seed).random((n, channels, *tile), dtype=np.float32)


def tile_origins(shape: tuple[int, int, int], tile: tuple[int, int, int], n: int) -> list[tuple[int, int, int]]:
    """``n`` tile corners spread along the volume's diagonal (first and last at the corners when n > 1)."""
    if any(s < t for s, t in zip(shape, tile)):
        raise ExportError(f"the parity volume {shape} is smaller than a tile {tile}; give a larger "
                          f"--parity-volume")
    fractions = [0.5] if n == 1 else [k / (n - 1) for k in range(n)]
    return [tuple(int(round(f * (s - t))) for s, t in zip(shape, tile)) for f in fractions]


def tiles_from_volume(volume, tile: tuple[int, int, int], n: int, normalization: NormalizationSpec) -> np.ndarray:
    """``n`` tiles ``(n, C, *tile)`` from ``volume`` (a :class:`~tpem_seg.io.Volume`), normalised over the whole
    volume with the package's normalisation (as the runtime does)."""
    from tpem_seg.runtime.normalize import fit_normalizer

    normalizer = fit_normalizer(volume, normalization)
    d, h, w = tile
    out = []
    for z, y, x in tile_origins(volume.shape_zyx, tile, n):
        block = volume.read_czyx(z, z + d)[:, :, y:y + h, x:x + w]
        out.append(normalizer(block))
    return np.stack(out).astype(np.float32, copy=False)


def parity_tiles(manifest: Manifest, n_random: int = 2, n_real: int = 2, volume_path: str | Path | None = None,
                 seed: int = 0, volume_axes: str | None = None) -> ParityTiles:
    """Random tiles plus real-looking ones: from ``volume_path`` (read with ``volume_axes`` if its metadata
    lack them) if given, else from a simulated two-photon volume 1.5 tiles wide (its vessel and neuron
    channels repeated to the network's channel count)."""
    from tpem_seg.io import Volume, read_volume

    channels, tile = manifest.config.in_channels, manifest.tile
    parts, sources = [], {}
    if n_random:
        parts.append(random_tiles(n_random, channels, tile, seed))
        sources["random"] = n_random
    if n_real:
        if volume_path is not None:
            volume = read_volume(volume_path, axes=volume_axes)
            if volume.n_channels != channels:
                raise ExportError(f"--parity-volume {volume_path} has {volume.n_channels} channel(s), the network "
                                  f"takes {channels}; give a volume with the model's channels")
            sources["volume"] = n_real
        else:
            from tpem_seg.runtime.bench.inputs import simulated_stack

            raw = simulated_stack(tuple(t + t // 2 for t in tile), channels, seed).astype(np.float32)
            if manifest.normalization.mode == "none":
                raw /= raw.max()  # identity normalisation: keep inputs in the unit range the network expects
            volume = Volume(raw, "CZYX")
            sources["synthetic"] = n_real
        parts.append(tiles_from_volume(volume, tile, n_real, manifest.normalization))
    if not parts:
        raise ExportError("parity needs at least one tile; raise --parity-tiles")
    return ParityTiles(np.concatenate(parts), sources)


# -- comparison --------------------------------------------------------------------------------------


def logits_of(backend, tiles: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """``backend``'s logits for ``tiles`` in batches of ``batch_size``, and the seconds it took."""
    started = time.perf_counter()
    parts = [backend.infer(np.ascontiguousarray(tiles[i:i + batch_size])) for i in range(0, len(tiles), batch_size)]
    return np.concatenate(parts), time.perf_counter() - started


def measure_parity(reference, candidate, tiles: ParityTiles, batch_size: int = 3,
                   tolerance: float | None = None) -> ParityReport:
    """Run both (loaded) backends on ``tiles`` and compare; ``passed`` is set when ``tolerance`` is given."""
    manifest = reference.package.manifest
    ref, ref_s = logits_of(reference, tiles.tiles, batch_size)
    can, can_s = logits_of(candidate, tiles.tiles, batch_size)
    if can.shape != ref.shape:
        raise ParityError(f"outputs differ in shape: {can.shape} vs {ref.shape}")
    a = compare_logits(can, ref, manifest.classes, manifest.activation)
    report = ParityReport(reference.describe(), candidate.describe(), int(len(tiles.tiles)), dict(tiles.sources),
                          a.max_abs_prob_diff, a.mean_abs_prob_diff, a.max_abs_logit_diff, a.voxel_agreement,
                          tolerance=tolerance, seconds={"reference": round(ref_s, 3), "candidate": round(can_s, 3)})
    if tolerance is not None:
        report.passed = bool(report.max_abs_prob_diff <= tolerance)
    log.info("%s", report.line())
    return report


def check_parity(report: ParityReport, what: str, consequence: str = "nothing was written") -> ParityReport:
    """Raise ParityError (one line, with the numbers and the fix) unless ``report.passed``."""
    if report.passed is False:
        raise ParityError(f"{what} fails parity: {report.candidate} differs from {report.reference} by up to "
                          f"{report.max_abs_prob_diff:.2e} in probability (tolerance {report.tolerance:g}, "
                          f"{report.n_tiles} tiles); {consequence}. Check it with -vv, or raise "
                          f"--parity-tolerance if the difference is expected")
    return report


def backend_parity(package: ModelPackage, reference: BackendSpec, candidate: BackendSpec | Backend,
                   tiles: ParityTiles, tolerance: float | None = None, batch_size: int = 3) -> ParityReport:
    """Parity of two runtime backends: ``reference`` built from its spec, ``candidate`` from its spec
    or given as an already constructed (unloaded) backend."""
    can = candidate if isinstance(candidate, Backend) else create_backend(candidate, package)
    with create_backend(reference, package) as ref, can:
        return measure_parity(ref, can, tiles, batch_size, tolerance)


def export_parity(package: ModelPackage, tiles: ParityTiles, tolerance: float = FP32_TOLERANCE,
                  batch_size: int = 3) -> ParityReport:
    """ONNX Runtime (the package's ONNX) against PyTorch (its weights), both fp32 on the CPU."""
    return backend_parity(package, BackendSpec("torch", "cpu"), BackendSpec("onnxruntime", "cpu"), tiles, tolerance,
                          batch_size)


def dropout_graph_parity(package: ModelPackage, tiles: ParityTiles, tolerance: float = FP32_TOLERANCE,
                         batch_size: int = 3) -> ParityReport:
    """The package's dropout graph (Monte-Carlo dropout) against PyTorch in eval mode, with ONNX
    Runtime's default graph optimisations, whose EliminateDropout rewrite removes its Dropout nodes:
    what is left must be the deterministic network (the draws themselves differ between runtimes)."""
    candidate = OnnxRuntimeBackend(package, model_path=package.mc_dropout_path,
                                   variant="dropout graph, dropout removed")
    return backend_parity(package, BackendSpec("torch", "cpu"), candidate, tiles, tolerance, batch_size)


def precision_parity(package: ModelPackage, precision: str, device: str, tiles: ParityTiles,
                     batch_size: int = 2, backend: str = "torch") -> ParityReport:
    """``backend`` at ``precision`` on ``device`` against the same backend at fp32 (measured, no tolerance).

    For the torch backend on CUDA this is fp16/bf16 autocast against fp32 (TF32 as PyTorch defaults).
    """
    return backend_parity(package, BackendSpec(backend, device), BackendSpec(backend, device, precision), tiles, None,
                          batch_size)


def engine_parity(package: ModelPackage, engine_backend, tiles: ParityTiles, tolerance: float | None,
                  batch_size: int = 2) -> ParityReport:
    """A TensorRT backend (constructed, unloaded) against ONNX Runtime fp32 on the CPU, same tiles."""
    return backend_parity(package, BackendSpec("onnxruntime", "cpu"), engine_backend, tiles, tolerance, batch_size)
