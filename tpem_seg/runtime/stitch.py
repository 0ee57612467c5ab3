"""Streaming stitcher: weighted accumulation of tile logits, finished z-slab by z-slab."""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Stitcher:
    """Accumulates weighted tile logits over a moving window of ``tile_z`` planes.

    Tiles must arrive in z-major order (see :func:`plan_tiles`). After the tiles
    of one z-row, :meth:`advance` to the next row's z emits every plane no later
    tile touches, so memory is ``(K + 1) * tile_z * Y * X`` floats whatever the
    volume's depth.

    Coordinates are those of the padded grid of shape ``(Z, Y, X)``.
    """

    def __init__(self, n_classes: int, shape: Sequence[int], tile: Sequence[int], weights: np.ndarray):
        self.shape = tuple(int(s) for s in shape)
        self.tile = tuple(int(t) for t in tile)
        self.weights = weights.astype(np.float32)
        zt, y, x = self.tile[0], self.shape[1], self.shape[2]
        self._logits = np.zeros((n_classes, zt, y, x), dtype=np.float32)
        self._norm = np.zeros((zt, y, x), dtype=np.float32)
        self._base = 0  # padded z of the window's first plane

    def add(self, logits: np.ndarray, origins: Sequence[tuple[int, int, int]]) -> None:
        """Add a batch of tile logits ``(N, K, D, H, W)`` at tile ``origins`` (z, y, x)."""
        d, h, w = self.tile
        for tile_logits, (z, y, x) in zip(logits, origins):
            dz = z - self._base
            if not 0 <= dz <= self._logits.shape[1] - d:
                raise ValueError(f"tile at z={z} lies outside the stitch window starting at {self._base}")
            self._logits[:, dz:dz + d, y:y + h, x:x + w] += tile_logits * self.weights
            self._norm[dz:dz + d, y:y + h, x:x + w] += self.weights

    def advance(self, next_z: int) -> tuple[int, np.ndarray] | None:
        """Finish planes ``[base, next_z)``: return ``(z0, logits (K, dz, Y, X))`` and slide the window.

        Pass ``next_z = Z`` after the last row to flush everything. Returns None
        when no plane is finished.
        """
        n_window = min(next_z, self.shape[0]) - self._base
        if n_window <= 0:
            return None
        if n_window > self._logits.shape[1]:
            raise ValueError(f"cannot finish {n_window} planes with a window of {self._logits.shape[1]}")
        finished = self._logits[:, :n_window] / self._norm[:n_window]
        # Slide: planes past the emitted part move to the front, the rest starts empty.
        self._logits[:, :-n_window] = self._logits[:, n_window:].copy()
        self._norm[:-n_window] = self._norm[n_window:].copy()
        self._logits[:, -n_window:] = 0.0
        self._norm[-n_window:] = 0.0
        z0, self._base = self._base, self._base + n_window
        return z0, finished
