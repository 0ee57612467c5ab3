"""The vascular tree: pial vessels on the surface, penetrating arterioles and venules, capillaries."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from tpem_seg.sim.config import SimulationConfig
from tpem_seg.sim.geometry import Tube, bridge_path, clip_to_box, log_uniform, persistent_walks

# Uniform point sets in 3D, each point joined to its 3 nearest neighbours: unique edges
# per point times mean edge length, in units of the point spacing n^(-1/3). Measured
# numerically (1.47-1.49); used to pick the node density for a capillary length density.
_KNN3_LENGTH_PER_NODE = 1.48


def draw_surface_vessels(rng: np.random.Generator, cfg: SimulationConfig, lo: np.ndarray, hi: np.ndarray) -> list[Tube]:
    """Pial vessels: thick, tortuous in the surface plane, lying on the pia, with side branches."""
    if lo[0] > 2 * cfg.surface_radius_um[1] + 5.0:
        return []  # the volume starts below the surface layer
    area_mm2 = (hi[1] - lo[1]) * (hi[2] - lo[2]) * 1e-6
    budget = cfg.surface_vessel_density * area_mm2 * 1e3  # µm
    tubes: list[Tube] = []
    total = 0.0
    diag = float(np.hypot(hi[1] - lo[1], hi[2] - lo[2]))
    while total < budget:
        # Enter through a random point of the lateral boundary, heading across the box.
        side = rng.integers(4)
        u = rng.uniform()
        y = lo[1] + u * (hi[1] - lo[1]) if side < 2 else (lo[1] if side == 2 else hi[1])
        x = lo[2] + u * (hi[2] - lo[2]) if side >= 2 else (lo[2] if side == 0 else hi[2])
        target = np.array([rng.uniform(lo[1], hi[1]), rng.uniform(lo[2], hi[2])])
        heading = target - np.array([y, x])
        radius = float(log_uniform(rng, *cfg.surface_radius_um))
        depth = radius + rng.uniform(0.5, 4.0)
        start = np.array([[depth, y, x]])
        step = max(3.0, 0.5 * radius)
        n = int(math.ceil(1.5 * diag / step))
        walk = persistent_walks(rng, start, np.array([[0.0, *heading]]), n, np.array([step]),
                                 np.array([rng.uniform(200.0, 500.0)]), planar=True)[0]
        walk = clip_to_box(walk, lo - [1e9, 1.0, 1.0], hi + [1e9, 1.0, 1.0])
        bright = float(rng.uniform(*cfg.vessel_brightness))
        tubes.append(Tube(walk, np.full(len(walk), radius), bright))
        length = float(np.sum(np.linalg.norm(np.diff(walk, axis=0), axis=1)))
        total += length
        # Side branches: thinner, leaving at a steep angle, a few hundred µm long.
        n_branch = rng.poisson(length / cfg.surface_branch_spacing_um)
        for _ in range(n_branch):
            i = int(rng.integers(1, len(walk) - 1)) if len(walk) > 2 else 0
            along = walk[min(i + 1, len(walk) - 1)] - walk[max(i - 1, 0)]
            angle = rng.choice([-1.0, 1.0]) * rng.uniform(math.radians(40), math.radians(90))
            c, s = math.cos(angle), math.sin(angle)
            heading = np.array([0.0, c * along[1] - s * along[2], s * along[1] + c * along[2]])
            r_b = max(cfg.surface_radius_um[0] * 0.6, radius * rng.uniform(0.45, 0.8))
            b_len = rng.uniform(80.0, 250.0)
            b_step = max(3.0, 0.5 * r_b)
            start = walk[i].copy()
            start[0] = r_b + rng.uniform(0.5, 3.0)
            bw = persistent_walks(rng, start[None], heading[None], int(math.ceil(b_len / b_step)),
                                   np.array([b_step]), np.array([rng.uniform(100.0, 300.0)]), planar=True)[0]
            bw = clip_to_box(bw, lo - [1e9, 1.0, 1.0], hi + [1e9, 1.0, 1.0])
            # Taper: branches narrow towards their end where they dive or split.
            radii = r_b * np.linspace(1.0, 0.8, len(bw))
            tubes.append(Tube(bw, radii, bright))
            total += float(np.sum(np.linalg.norm(np.diff(bw, axis=0), axis=1)))
    return tubes



def draw_penetrating(rng: np.random.Generator, cfg: SimulationConfig, lo: np.ndarray, hi: np.ndarray,
                      surface: list[Tube]) -> list[Tube]:
    """Penetrating arterioles/venules: from the pia (often off a pial vessel) down along z."""
    area_mm2 = (hi[1] - lo[1]) * (hi[2] - lo[2]) * 1e-6
    count = int(rng.poisson(cfg.penetrating_density * area_mm2))
    if count == 0:
        return []
    surface_points = np.concatenate([t.points for t in surface]) if surface else np.empty((0, 3))
    surface_radii = np.concatenate([t.radii for t in surface]) if surface else np.empty(0)
    radii = log_uniform(rng, *cfg.penetrating_radius_um, size=count)
    starts = np.empty((count, 3))
    from_surface = rng.uniform(size=count) < 0.5
    for i in range(count):
        if from_surface[i] and len(surface_points):
            j = int(rng.integers(len(surface_points)))
            starts[i] = surface_points[j]
            radii[i] = min(radii[i], surface_radii[j])
        else:
            starts[i] = [0.0, rng.uniform(lo[1], hi[1]), rng.uniform(lo[2], hi[2])]
    tilt = np.radians(rng.uniform(0.0, cfg.penetrating_tilt_deg, count))
    azimuth = rng.uniform(0.0, 2 * np.pi, count)
    dirs = np.stack([np.cos(tilt), np.sin(tilt) * np.sin(azimuth), np.sin(tilt) * np.cos(azimuth)], axis=1)
    step = np.maximum(4.0, 0.5 * radii)
    n = int(math.ceil(hi[0] / step.min())) + 1
    # Strong pull along the initial direction: they meander a little but keep diving.
    walks = persistent_walks(rng, starts, dirs, n, step, np.full(count, 150.0), bias=0.15 * dirs)
    brightness = rng.uniform(*cfg.vessel_brightness, count)
    tubes = []
    for i in range(count):
        pts = walks[i]
        keep = np.nonzero(pts[:, 0] > hi[0])[0]
        pts = pts[: int(keep[0]) + 1] if len(keep) else pts
        if len(pts) < 2:
            continue
        # Penetrating vessels narrow slowly with depth as they give off capillaries.
        r = radii[i] * np.maximum(0.6, 1.0 - pts[:, 0] / 1500.0)
        tubes.append(Tube(pts, r, float(brightness[i])))
    return tubes



def draw_capillaries(rng: np.random.Generator, cfg: SimulationConfig, lo: np.ndarray, hi: np.ndarray,
                      penetrating: list[Tube]) -> list[Tube]:
    """Capillary bed: random nodes joined to their nearest neighbours by tortuous tubes.

    Joining each node to its 3 nearest neighbours gives the mesh of loops seen in the
    cortex; anchor nodes on the penetrating vessels make capillaries branch off them.
    """
    z0 = max(lo[0], 3.0)
    volume = float(np.prod(hi - [z0, lo[1], lo[2]]))
    if volume <= 0 or cfg.capillary_length_density <= 0:
        return []
    density = cfg.capillary_length_density * 1e-6  # mm/mm³ -> µm/µm³
    tortuosity = 1.1  # path length over chord length of the bridges, roughly
    node_density = (density / (_KNN3_LENGTH_PER_NODE * tortuosity)) ** 1.5
    n_nodes = int(rng.poisson(node_density * volume))
    nodes = rng.uniform([z0, lo[1], lo[2]], hi, size=(n_nodes, 3))
    anchors = []
    for tube in penetrating:
        inside = tube.points[(tube.points[:, 0] >= z0) & (tube.points[:, 0] <= hi[0])]
        anchors.append(inside[:: max(1, int(round(25.0 / 4.0)))])
    anchors_arr = np.concatenate(anchors) if anchors else np.empty((0, 3))
    points = np.concatenate([nodes, anchors_arr])
    if len(points) < 4:
        return []
    _, nn = cKDTree(points).query(points, k=4)
    edges = np.sort(np.stack([np.repeat(np.arange(len(points)), 3), nn[:, 1:].ravel()], axis=1), axis=1)
    edges = np.unique(edges, axis=0)
    edges = edges[~((edges[:, 0] >= n_nodes) & (edges[:, 1] >= n_nodes))]
    edges = edges[rng.permutation(len(edges))]
    budget = density * volume
    tubes: list[Tube] = []
    total = 0.0
    for i, j in edges:
        if total >= budget:
            break
        path = bridge_path(rng, points[i], points[j], 2.5, cfg.capillary_tortuosity_um)
        # Capillaries stay below the pia.
        r = float(rng.uniform(*cfg.capillary_radius_um))
        path[:, 0] = np.maximum(path[:, 0], r + 0.5)
        tubes.append(Tube(path, np.full(len(path), r), float(rng.uniform(*cfg.vessel_brightness))))
        total += float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1)))
    return tubes

