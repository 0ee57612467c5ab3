"""Bring a volume to the model's voxel size and the logits back (linear interpolation).

This path holds the whole volume in memory; the streaming path is used
whenever the voxel sizes already match (or resampling is switched off).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tpem_seg.io import Volume

#: Relative voxel-size difference below which no resampling is done.
TOLERANCE = 0.05


def needs_resampling(spacing: Sequence[float] | None, target: Sequence[float] | None,
                     tolerance: float = TOLERANCE) -> bool:
    if spacing is None or target is None:
        return False
    return any(abs(s - t) > tolerance * t for s, t in zip(spacing, target))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def _zoom_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Linear zoom of a 3D array to exactly ``shape`` (corners aligned)."""
    from scipy import ndimage  # here, not at the top: `import tpem_seg.cli` must not pay for scipy

    factors = [n / o for n, o in zip(shape, array.shape)]
    out = ndimage.zoom(array, factors, order=1, mode="nearest", grid_mode=False)
    if out.shape != tuple(shape):  # zoom rounds; the aligned-corner grid allows a safe crop/pad
        pad = [(0, max(n - o, 0)) for n, o in zip(shape, out.shape)]
        out = np.pad(out, pad, mode="edge")[tuple(slice(0, n) for n in shape)]
    return out


def resample_volume(volume: Volume, target: Sequence[float], channels: Sequence[int] | None) -> Volume:
    """The volume ``(C, Z', Y', X')`` float32 at voxel size ``target`` (µm), channels selected."""
    data = volume.read_czyx(channels=channels).astype(np.float32)
    shape = resampled_shape(volume.shape_zyx, volume.spacing, target)
    return Volume(np.stack([_zoom_to(c, shape) for c in data]), "CZYX", tuple(target), volume.channel_names)


def resample_logits(logits: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Logits ``(K, Z', Y', X')`` zoomed back to the input's spatial ``shape``."""
    return np.stack([_zoom_to(k, shape) for k in logits])
