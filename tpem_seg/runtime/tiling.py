"""Tile grids and blending weights: small pure functions, numpy only.

The grid and the Gaussian follow MONAI's ``sliding_window_inference``
conventions (scan interval ``int(tile * (1 - overlap))``, last tile flush with
the edge, zero padding split ``diff // 2`` before, importance map
``exp(-x^2 / 2 sigma^2)`` with ``sigma = sigma_scale * tile``, clamped to its
minimum), so results can be checked against MONAI voxel for voxel.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np


def scan_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start indices of tiles of length ``tile`` covering ``size`` voxels (``size >= tile``).

    >>> scan_starts(100, 32, 0.25)
    [0, 24, 48, 68]
    """
    if size < tile:
        raise ValueError(f"size {size} is smaller than the tile {tile}; pad first")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap {overlap} must be in [0, 1)")
    interval = tile if size == tile else max(int(tile * (1 - overlap)), 1)
    count = 1
    while (count - 1) * interval + tile < size:
        count += 1
    return [min(i * interval, size - tile) for i in range(count)]


def plan_tiles(shape: Sequence[int], tile: Sequence[int], overlap: float) -> list[tuple[int, int, int]]:
    """Tile origins ``(z, y, x)`` over a (padded) ``shape``, z-major order.

    Every tile lies inside ``shape``; rows of equal z come together, so a
    stitcher can finish a z-slab once the next row starts.
    """
    axes = [scan_starts(int(s), int(t), overlap) for s, t in zip(shape, tile)]
    return list(itertools.product(*axes))


def pad_widths(shape: Sequence[int], tile: Sequence[int]) -> list[tuple[int, int]]:
    """Per-axis ``(before, after)`` zero padding that makes ``shape`` at least ``tile``."""
    widths = []
    for s, t in zip(shape, tile):
        diff = max(int(t) - int(s), 0)
        widths.append((diff // 2, diff - diff // 2))
    return widths


def gaussian_weights(tile: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights ``(D, H, W)`` float32: a separable Gaussian peaking at the tile centre.

    ``sigma = sigma_scale * tile`` per axis (1/8, the nnU-Net and MONAI default);
    weights are clamped below at their minimum (at least 1e-3) so edges still count.
    """
    weights = np.ones((), dtype=np.float32)
    for t in tile:
        # The 1-D exponentials in float64, cast once: numpy's float32 exp and the C library's expf
        # differ by one ulp on many entries, so both runtimes (this one and cpp_bindings) use float64.
        x = np.arange(t, dtype=np.float64) - (t - 1) / 2.0
        sigma = sigma_scale * t
        g = np.exp(x ** 2 / (-2.0 * sigma ** 2)).astype(np.float32)
        weights = np.multiply.outer(weights, g)
    return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def count_tiles(shape: Sequence[int], tile: Sequence[int], overlap: float) -> int:
    padded = [max(int(s), int(t)) for s, t in zip(shape, tile)]
    return math.prod(len(scan_starts(s, t, overlap)) for s, t in zip(padded, tile))
