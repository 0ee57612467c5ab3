"""Parity: does a deployed form of the network reproduce its reference on the same tiles?

Export compares ONNX Runtime against PyTorch (fp32, probabilities within 1e-4), an engine
build compares TensorRT against ONNX Runtime, and the GPU benchmark compares PyTorch
fp16/bf16 against fp32. All go through the runtime's own backends, so what is measured is
what users run. Tiles are network inputs ``(N, C, D, H, W)`` float32, already normalised:
uniform random tiles, and real-looking ones cut from a volume (the user's, or a smooth
synthetic one with vessel-like tubes and soma-like blobs) normalised the way the runtime
normalises whole volumes.
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
from tpem_seg.runtime.outputs import to_probabilities

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


def synthetic_volume(shape: tuple[int, int, int], channels: int, seed: int = 0) -> np.ndarray:
    """A smooth two-photon-like volume ``(channels, Z, Y, X)`` float32 in raw intensity units (~0..1100).

    Even channels hold vessel-like tubes (Gaussian cross-sections along random axes), odd channels
    soma-like blobs; all on a dim background of 100 with mild noise. Built from separable
    Gaussians, so a 192^3 volume takes about a second.
    """
    rng = np.random.default_rng(seed)
    grids = [np.arange(s, dtype=np.float32) for s in shape]
    volume = np.full((channels, *shape), 100.0, dtype=np.float32)
    for c in range(channels):
        for _ in range(6 if c % 2 == 0 else 12):
            centre = [rng.uniform(0, s) for s in shape]
            sigma = rng.uniform(1.5, 4.0) if c % 2 == 0 else rng.uniform(2.0, 5.0)
            profiles = [np.exp(-0.5 * ((g - m) / sigma) ** 2) for g, m in zip(grids, centre)]
            if c % 2 == 0:  # a tube: constant along one axis
                along = int(rng.integers(3))
                profiles[along] = np.ones_like(grids[along])
            volume[c] += rng.uniform(400, 1000) * (profiles[0][:, None, None] * profiles[1][None, :, None]
                                                   * profiles[2][None, None, :])
    volume += rng.normal(0.0, 15.0, volume.shape).astype(np.float32)
    return np.clip(volume, 0, None)


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
    lack them) if given, else from :func:`synthetic_volume`."""
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
            shape = tuple(t + t // 2 for t in tile)
            raw = synthetic_volume(shape, channels, seed)
            if manifest.normalization.mode == "none":
                raw /= 1000.0  # identity normalisation: keep inputs near the unit range the network expects
            volume = Volume(raw, "CZYX")
            sources["synthetic"] = n_real
        parts.append(tiles_from_volume(volume, tile, n_real, manifest.normalization))
    if not parts:
        raise ExportError("parity needs at least one tile; raise --parity-tiles")
    return ParityTiles(np.concatenate(parts), sources)


# -- comparison --------------------------------------------------------------------------------------


def compare_logits(reference: np.ndarray, candidate: np.ndarray, activation: str) -> dict[str, float]:
    """Differences between two logit batches ``(N, K, D, H, W)``: see :class:`ParityReport`."""
    if reference.shape != candidate.shape:
        raise ParityError(f"outputs differ in shape: {candidate.shape} vs {reference.shape}")
    if not np.isfinite(candidate).all():
        return {"max_abs_prob_diff": float("inf"), "mean_abs_prob_diff": float("inf"),
                "max_abs_logit_diff": float("inf"), "label_agreement": 0.0}
    ref_p = np.stack([to_probabilities(r.astype(np.float64), activation) for r in reference])
    can_p = np.stack([to_probabilities(c.astype(np.float64), activation) for c in candidate])
    diff = np.abs(ref_p - can_p)
    return {"max_abs_prob_diff": float(diff.max()), "mean_abs_prob_diff": float(diff.mean()),
            "max_abs_logit_diff": float(np.abs(reference.astype(np.float64) - candidate).max()),
            "label_agreement": float((ref_p.argmax(1) == can_p.argmax(1)).mean())}


def logits_of(backend, tiles: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """``backend``'s logits for ``tiles`` in batches of ``batch_size``, and the seconds it took."""
    started = time.perf_counter()
    parts = [backend.infer(np.ascontiguousarray(tiles[i:i + batch_size])) for i in range(0, len(tiles), batch_size)]
    return np.concatenate(parts), time.perf_counter() - started


def measure_parity(reference, candidate, tiles: ParityTiles, activation: str, batch_size: int = 3,
                   tolerance: float | None = None) -> ParityReport:
    """Run both (loaded) backends on ``tiles`` and compare; ``passed`` is set when ``tolerance`` is given."""
    ref, ref_s = logits_of(reference, tiles.tiles, batch_size)
    can, can_s = logits_of(candidate, tiles.tiles, batch_size)
    metrics = compare_logits(ref, can, activation)
    report = ParityReport(reference.describe(), candidate.describe(), int(len(tiles.tiles)), dict(tiles.sources),
                          tolerance=tolerance, seconds={"reference": round(ref_s, 3), "candidate": round(can_s, 3)},
                          **metrics)
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


def backend_parity(package: ModelPackage, reference: tuple[str, str, str], candidate: tuple[str, str, str],
                   tiles: ParityTiles, tolerance: float | None = None, batch_size: int = 3,
                   candidate_backend=None) -> ParityReport:
    """Parity of two runtime backends given as ``(name, device, precision)``.

    ``candidate_backend``: an already constructed (unloaded) backend to use instead of ``candidate``.
    """
    activation = package.manifest.activation
    with _create(reference, package) as ref, (candidate_backend or _create(candidate, package)) as can:
        return measure_parity(ref, can, tiles, activation, batch_size, tolerance)


def _create(spec: tuple[str, str, str], package: ModelPackage):
    from tpem_seg.runtime.backends import create_backend

    name, device, precision = spec
    return create_backend(name, package, device=device, precision=precision)


def export_parity(package: ModelPackage, tiles: ParityTiles, tolerance: float = FP32_TOLERANCE,
                  batch_size: int = 3) -> ParityReport:
    """ONNX Runtime (the package's ONNX) against PyTorch (its weights), both fp32 on the CPU."""
    return backend_parity(package, ("torch", "cpu", "fp32"), ("onnxruntime", "cpu", "fp32"), tiles, tolerance,
                          batch_size)


def precision_parity(package: ModelPackage, precision: str, device: str, tiles: ParityTiles,
                     batch_size: int = 2, backend: str = "torch") -> ParityReport:
    """``backend`` at ``precision`` on ``device`` against the same backend at fp32 (measured, no tolerance).

    For the torch backend on CUDA this is fp16/bf16 autocast against fp32 (TF32 as PyTorch defaults).
    """
    return backend_parity(package, (backend, device, "fp32"), (backend, device, precision), tiles, None, batch_size)


def engine_parity(package: ModelPackage, engine_backend, tiles: ParityTiles, tolerance: float | None,
                  batch_size: int = 2) -> ParityReport:
    """A TensorRT backend (constructed, unloaded) against ONNX Runtime fp32 on the CPU, same tiles."""
    return backend_parity(package, ("onnxruntime", "cpu", "fp32"), ("tensorrt", engine_backend.device,
                                                                     engine_backend.precision),
                          tiles, tolerance, batch_size, candidate_backend=engine_backend)
