"""Masking strategies for masked image modelling, as pure functions over the patch grid.

A mask is a boolean array over a grid of *mask patches* (``True`` = masked), like
facebookresearch/mae: the functions know nothing about space beyond the grid.
:func:`patch_means` and :func:`upsample_mask` connect the grid to voxels; a mask
patch of ``(16, 16, 16)`` voxels is exactly one ViT token of the UNETR.

Every strategy masks exactly ``round(ratio * n)`` of the ``n`` grid cells (at least
one, at most ``n - 1``), per sample and, for ``channel``, per channel.

- ``random``: cells drawn uniformly without replacement.
- ``intensity``: cells drawn without replacement with probability proportional to a
  weight that grows with the cell's mean normalised intensity (rule in
  :func:`intensity_weights`).
- ``channel``: an independent mask per channel, each drawn by ``random`` or
  ``intensity`` (on that channel's own intensities).

numpy only; ``rng`` is a ``numpy.random.Generator``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

STRATEGIES = ("random", "intensity", "channel")


def mask_count(n_cells: int, ratio: float) -> int:
    """How many of ``n_cells`` cells a mask of ``ratio`` covers: ``round(ratio * n)`` in [1, n - 1]."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio {ratio} must be in (0, 1)")
    if n_cells < 2:
        raise ValueError(f"a grid of {n_cells} cell(s) cannot be partly masked; use a smaller mask patch")
    return int(min(max(round(ratio * n_cells), 1), n_cells - 1))


def top_k_mask(keys: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest ``keys`` along the last axis; shape of ``keys``."""
    order = np.argsort(-keys, axis=-1, kind="stable")
    mask = np.zeros(keys.shape, dtype=bool)
    np.put_along_axis(mask, order[..., :k], True, axis=-1)
    return mask


def random_mask(shape: Sequence[int], grid: Sequence[int], ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform random masks: ``(*shape, *grid)`` bool, each ``grid`` holding exactly ``mask_count`` True.

    ``shape`` is the leading batch shape, e.g. ``(N,)`` or ``(N, C)``.
    """
    n = int(np.prod(grid))
    keys = rng.random((*shape, n))
    return top_k_mask(keys, mask_count(n, ratio)).reshape(*shape, *grid)


def intensity_weights(intensity: np.ndarray, sharpness: float = 1.0, floor: float = 0.05) -> np.ndarray:
    """Sampling weights from cell intensities ``(..., n)``: the intensity rule.

    With ``s`` a cell's mean normalised intensity, rescaled per sample (and channel) to
    ``[0, 1]`` by ``s' = (s - min s) / (max s - min s)``, the weight is
    ``w = floor + s' ** sharpness``. The brightest cell thus weighs ``(1 + floor) / floor``
    (21x at the default floor 0.05) as much as the darkest; a flat sample (max = min)
    gets equal weights, i.e. random masking. Rescaling makes the rule independent of
    a volume's overall brightness.
    """
    lo = intensity.min(axis=-1, keepdims=True)
    span = intensity.max(axis=-1, keepdims=True) - lo
    scaled = np.where(span > 0, (intensity - lo) / np.where(span > 0, span, 1.0), 0.0)
    return floor + scaled ** sharpness


def intensity_mask(intensity: np.ndarray, ratio: float, rng: np.random.Generator, sharpness: float = 1.0,
                   floor: float = 0.05) -> np.ndarray:
    """Intensity-based masks from cell intensities ``(*shape, *grid)``: bool, same shape.

    Exactly ``mask_count(n, ratio)`` cells per sample are drawn *without replacement*,
    each successive draw picking a remaining cell with probability proportional to
    its weight :func:`intensity_weights`. Drawn as the top-k of ``log w + Gumbel noise``
    (Efraimidis-Spirakis / Gumbel-top-k), which is that sequential draw exactly.
    Brighter cells are therefore masked more often; with ``ratio`` close to 1 the
    bias necessarily fades (nearly everything is masked).
    """
    grid = intensity.shape[-3:]
    lead = intensity.shape[:-3]
    flat = intensity.reshape(*lead, -1).astype(np.float64)
    keys = np.log(intensity_weights(flat, sharpness, floor)) + rng.gumbel(size=flat.shape)
    return top_k_mask(keys, mask_count(flat.shape[-1], ratio)).reshape(*lead, *grid)


def channel_mask(intensity: np.ndarray, ratio: float, rng: np.random.Generator, draw: str = "random",
                 sharpness: float = 1.0, floor: float = 0.05) -> np.ndarray:
    """Channel-separated masks ``(N, C, *grid)`` from per-channel cell intensities ``(N, C, *grid)``.

    Each channel of each sample gets its own mask of ``ratio``, drawn independently by
    ``draw`` = ``random`` or ``intensity`` (on that channel's intensities), so a
    structure hidden in one channel is often visible in another at the same place.
    """
    if draw == "random":
        return random_mask(intensity.shape[:2], intensity.shape[2:], ratio, rng)
    if draw == "intensity":
        return intensity_mask(intensity, ratio, rng, sharpness, floor)
    raise ValueError(f"channel mask draw {draw!r} must be random or intensity")


def patch_means(images: np.ndarray, mask_patch: Sequence[int]) -> np.ndarray:
    """Mean intensity per channel and mask patch: ``(N, C, D, H, W)`` -> ``(N, C, D/pd, H/ph, W/pw)``."""
    n, c, d, h, w = images.shape
    pd, ph, pw = (int(p) for p in mask_patch)
    if d % pd or h % ph or w % pw:
        raise ValueError(f"mask patch {tuple(mask_patch)} must divide the patch size {(d, h, w)}")
    blocks = images.reshape(n, c, d // pd, pd, h // ph, ph, w // pw, pw)
    return blocks.mean(axis=(3, 5, 7))


def upsample_mask(mask: np.ndarray, mask_patch: Sequence[int]) -> np.ndarray:
    """Grid mask ``(..., gd, gh, gw)`` -> voxel mask ``(..., gd*pd, gh*ph, gw*pw)`` (nearest)."""
    out = mask
    for axis, p in zip((-3, -2, -1), mask_patch):
        out = np.repeat(out, int(p), axis=axis)
    return out


def make_masks(strategy: str, images: np.ndarray, mask_patch: Sequence[int], ratio: float,
               rng: np.random.Generator, channel_draw: str = "random", sharpness: float = 1.0,
               floor: float = 0.05) -> np.ndarray:
    """Masks ``(N, C, gd, gh, gw)`` bool for a batch of normalised ``images`` ``(N, C, D, H, W)``.

    ``random`` and ``intensity`` give one mask per sample, repeated over channels
    (intensity: the channel-mean intensity of each cell); ``channel`` gives each
    channel its own.
    """
    n, c = images.shape[:2]
    grid = tuple(s // int(p) for s, p in zip(images.shape[2:], mask_patch))
    if strategy == "random":
        shared = random_mask((n,), grid, ratio, rng)
    elif strategy == "intensity":
        shared = intensity_mask(patch_means(images, mask_patch).mean(axis=1), ratio, rng, sharpness, floor)
    elif strategy == "channel":
        return channel_mask(patch_means(images, mask_patch), ratio, rng, channel_draw, sharpness, floor)
    else:
        raise ValueError(f"masking strategy {strategy!r} must be one of {STRATEGIES}")
    return np.repeat(shared[:, None], c, axis=1)
