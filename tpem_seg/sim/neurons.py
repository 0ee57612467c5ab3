"""Sparse labelled neurons (Thy1-type): somata outside the vessels, with apical and basal dendrites."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from tpem_seg.sim.config import SimulationConfig
from tpem_seg.sim.geometry import Soma, Tube, persistent_walks

def draw_neurons(rng: np.random.Generator, cfg: SimulationConfig, lo: np.ndarray, hi: np.ndarray,
                  vessels: list[Tube]) -> tuple[list[Soma], list[Tube]]:
    """Sparse somata (not inside vessels or each other) with an apical and basal dendrites."""
    z0 = max(lo[0], 10.0)
    volume = float(np.prod(hi - [z0, lo[1], lo[2]]))
    if volume <= 0 or cfg.soma_density <= 0:
        return [], []
    n = int(rng.poisson(cfg.soma_density * 1e-9 * volume))
    centres = rng.uniform([z0, lo[1], lo[2]], hi, size=(n, 3))
    radius = 0.5 * rng.uniform(*cfg.soma_diameter_um, n)
    # Somata are slightly elongated, randomly per axis.
    semi = radius[:, None] * rng.uniform(0.85, 1.15, (n, 3))
    brightness = rng.uniform(*cfg.neuron_brightness, n)
    if vessels:
        v_pts = np.concatenate([t.points for t in vessels])
        v_rad = np.concatenate([t.radii for t in vessels])
        tree = cKDTree(v_pts)
        reach = float(v_rad.max()) + float(semi.max()) + 2.0
        ok = np.ones(n, bool)
        for i, near in enumerate(tree.query_ball_point(centres, reach)):
            if near:
                gap = np.linalg.norm(v_pts[near] - centres[i], axis=1) - v_rad[near]
                ok[i] = bool(np.all(gap > semi[i].max() + 2.0))
    else:
        ok = np.ones(n, bool)
    somata: list[Soma] = []
    kept: list[np.ndarray] = []
    kept_r: list[float] = []
    for i in np.nonzero(ok)[0]:
        if kept:
            dist = np.linalg.norm(np.asarray(kept) - centres[i], axis=1)
            if np.any(dist < np.asarray(kept_r) + semi[i].max() + 2.0):
                continue
        kept.append(centres[i])
        kept_r.append(float(semi[i].max()))
        somata.append(Soma(centres[i], semi[i], float(brightness[i])))
    if not somata:
        return [], []

    # Dendrites: first one apical (towards the pia), the rest basal (sideways/down).
    starts, dirs, radii, lengths, bias, bright = [], [], [], [], [], []
    for soma in somata:
        k = int(rng.integers(cfg.dendrites_per_soma[0], cfg.dendrites_per_soma[1] + 1))
        for j in range(k):
            if j == 0:
                d = np.array([-1.0, *rng.normal(0.0, 0.25, 2)])
                b = np.array([-0.08, 0.0, 0.0])
                r0 = cfg.dendrite_radius_um[1] * rng.uniform(0.75, 1.0)
                length = rng.uniform(0.6, 1.0) * cfg.dendrite_length_um[1] * 1.3
            else:
                d = rng.normal(size=3)
                d[0] = abs(d[0]) * 0.5
                b = np.zeros(3)
                r0 = rng.uniform(cfg.dendrite_radius_um[0], 0.5 * sum(cfg.dendrite_radius_um))
                length = rng.uniform(*cfg.dendrite_length_um)
            d /= np.linalg.norm(d)
            starts.append(soma.centre + 0.8 * d * soma.semi_axes)
            dirs.append(d)
            radii.append(r0)
            lengths.append(length)
            bias.append(b)
            bright.append(soma.brightness * rng.uniform(0.85, 1.0))
    step = 2.0
    n_steps = int(math.ceil(max(lengths) / step))
    walks = persistent_walks(rng, np.asarray(starts), np.asarray(dirs), n_steps, np.full(len(starts), step),
                              np.full(len(starts), 60.0), bias=np.asarray(bias))
    dendrites = []
    for w, r0, length, b in zip(walks, radii, lengths, bright):
        m = int(math.ceil(length / step)) + 1
        pts = w[:m]
        above = np.nonzero(pts[:, 0] <= 1.0)[0]  # dendrites end at the pia
        pts = pts[: int(above[0])] if len(above) else pts
        if len(pts) < 2:
            continue
        # Dendrites taper to about half their initial radius.
        dendrites.append(Tube(pts, r0 * np.linspace(1.0, 0.5, len(pts)), b))
    return somata, dendrites

