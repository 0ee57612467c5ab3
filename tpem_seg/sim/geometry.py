"""Objects in physical space (µm, ``z`` the depth below the pia) and the random paths they follow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage


@dataclass
class Tube:
    points: np.ndarray  # (n, 3) µm, z = depth below the pia
    radii: np.ndarray  # (n,) µm
    brightness: float


@dataclass
class Soma:
    centre: np.ndarray  # (3,) µm
    semi_axes: np.ndarray  # (3,) µm
    brightness: float


@dataclass
class Anatomy:
    vessels: list[Tube]
    somata: list[Soma]
    dendrites: list[Tube]



def log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def persistent_walks(
    rng: np.random.Generator,
    starts: np.ndarray,
    directions: np.ndarray,
    n_steps: int,
    step: np.ndarray,
    persistence: np.ndarray,
    bias: np.ndarray | None = None,
    planar: bool = False,
) -> np.ndarray:
    """Persistent random walks, all stepped together. Returns ``(W, n_steps + 1, 3)`` µm.

    ``persistence`` (W,) is the length over which the direction decorrelates (µm); a
    ``bias`` (W, 3) pulls the direction each step (e.g. apical dendrites towards the pia).
    ``planar`` keeps z fixed (surface vessels lie on the pia).
    """
    w = len(starts)
    out = np.empty((w, n_steps + 1, 3))
    out[:, 0] = starts
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    # Angular diffusion: after ``persistence`` µm the direction has turned by ~1 rad.
    kappa = np.sqrt(step / persistence)[:, None]
    kicks = rng.normal(size=(n_steps, w, 3))
    if planar:
        kicks[..., 0] = 0.0
    for k in range(n_steps):
        d = d + kappa * kicks[k]
        if bias is not None:
            d = d + bias
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        out[:, k + 1] = out[:, k] + step[:, None] * d
    return out


def clip_to_box(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The leading run of ``points`` up to (and including) the first one outside the box."""
    outside = np.any((points < lo) | (points > hi), axis=1)
    first = int(np.argmax(outside)) if outside.any() else len(points) - 1
    return points[: max(first + 1, 2)]



def bridge_path(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, step: float, wiggle: float) -> np.ndarray:
    """A smooth tortuous path from ``a`` to ``b`` (µm): a Brownian bridge, smoothed."""
    length = float(np.linalg.norm(b - a))
    n = max(2, int(math.ceil(length / step)))
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    kicks = rng.normal(size=(n + 1, 3))
    kicks[0] = 0.0
    walk = np.cumsum(kicks, axis=0)
    # Smoothing over ~10 µm: capillaries bend gently, they do not zigzag.
    walk = ndimage.gaussian_filter1d(walk, sigma=max(1.0, 10.0 / step), axis=0, mode="nearest")
    bridge = walk - walk[:1] - t * (walk[-1:] - walk[:1])
    # Scale so the excursion at mid-length is ``wiggle`` µm for a typical segment,
    # growing with sqrt(length) as a random walk does.
    scale = wiggle * math.sqrt(max(length, 1.0) / 40.0) / max(float(np.sqrt((bridge**2).sum(1).mean())), 1e-9)
    return a + t * (b - a) + bridge * scale

