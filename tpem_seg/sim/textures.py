"""Smooth random fields in physical units: background modulation and fine texture (blood flow, neuropil)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

def low_frequency_field(rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray,
                         cell_um: float = 25.0, amplitude: float = 0.25) -> np.ndarray:
    """Smooth multiplicative modulation around 1 with structure ~``cell_um`` µm.

    Drawn on a coarse grid in physical units, so its draws do not depend on the voxel size.
    """
    extent = np.asarray(shape) * spacing
    coarse_shape = tuple(int(math.ceil(e / cell_um)) + 2 for e in extent)
    coarse = ndimage.gaussian_filter(rng.normal(size=coarse_shape), 1.0, mode="wrap")
    coarse = 1.0 + amplitude * coarse / max(float(coarse.std()), 1e-9)
    # Sample the coarse grid at voxel centres: separable linear interpolation, one small
    # matrix per axis, so the cost is a few matrix products rather than per-voxel lookups.
    out = coarse
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        pos = (np.arange(n) + 0.5) * s / cell_um + 0.5
        i0 = np.clip(np.floor(pos).astype(int), 0, coarse_shape[axis] - 2)
        w = np.clip(pos - i0, 0.0, 1.0)
        weights = np.zeros((n, coarse_shape[axis]))
        weights[np.arange(n), i0] = 1.0 - w
        weights[np.arange(n), i0 + 1] = w
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    return np.clip(out, 0.2, None).astype(np.float32)


def fine_texture(rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray,
                  scale_um: float = 1.5) -> np.ndarray:
    """Zero-mean, unit-variance smooth noise with correlation length ``scale_um`` µm."""
    noise = rng.standard_normal(size=shape, dtype=np.float32)
    sigma = [scale_um / s for s in spacing]
    noise = ndimage.gaussian_filter(noise, sigma, mode="reflect", truncate=3.0)
    std = float(noise.std())
    noise /= max(std, 1e-9)
    return noise

