"""Streaming stitcher: weighted accumulation of tile logits, finished z-slab by z-slab.

One stitcher for numpy arrays and torch tensors on a device: the arithmetic goes through an
array-operations object (:data:`~tpem_seg.runtime.arrays.NUMPY`, or
:class:`~tpem_seg.runtime.arrays_torch.TorchOps` for the GPU path).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tpem_seg.runtime.arrays import NUMPY


class Stitcher:
    """Accumulates weighted tile logits over a moving window of ``tile_z`` planes.

    Tiles must arrive in z-major order (see :func:`~tpem_seg.runtime.tiling.plan_tiles`). After the
    tiles of one z-row, :meth:`advance_raw` to the next row's z hands out every plane no later tile
    touches, so memory is ``(K + 1) * tile_z * Y * X`` floats whatever the volume's depth.

    Coordinates are those of the stitched grid of shape ``(Z, Y, X)`` (the padded volume, or a
    block's window of it). ``ops`` does the arithmetic: numpy by default; logits given to
    :meth:`add` are then numpy arrays, or tensors on the ops' device for torch.
    """

    def __init__(self, n_classes: int, shape: Sequence[int], tile: Sequence[int], weights: np.ndarray, ops=NUMPY):
        self.shape = tuple(int(s) for s in shape)
        self.tile = tuple(int(t) for t in tile)
        self.ops = ops
        self.weights = ops.asarray(np.asarray(weights, dtype=np.float32))
        zt, y, x = self.tile[0], self.shape[1], self.shape[2]
        self._logits = ops.zeros((n_classes, zt, y, x))
        self._norm = ops.zeros((zt, y, x))
        self._scratch = ops.scratch((n_classes, *self.tile))  # one tile's weighted logits, reused
        self._base = 0  # z of the window's first plane

    @property
    def window_shape(self) -> tuple[int, ...]:
        """Shape ``(K, tile_z, Y, X)`` of the accumulation window: what the stitcher holds."""
        return tuple(self._logits.shape)

    def add(self, logits, origins: Sequence[tuple[int, int, int]]) -> None:
        """Add a batch of tile logits ``(N, K, D, H, W)`` at tile ``origins`` (z, y, x)."""
        logits = self.ops.asarray(logits)
        for tile_logits, origin in zip(logits, origins):
            logits_view, norm_view = self._views(origin)
            self.ops.add_weighted(logits_view, tile_logits, self.weights, self._scratch)
            norm_view += self.weights

    def add_constant(self, values: Sequence[float], origins: Sequence[tuple[int, int, int]]) -> None:
        """Add tiles whose logits are the constant ``values[k]`` for class ``k`` everywhere (skipped tiles).

        Equal to :meth:`add` with ``values`` broadcast to ``(K, D, H, W)`` per tile, without
        materialising it; classes whose value is 0 cost nothing.
        """
        for origin in origins:
            logits_view, norm_view = self._views(origin)
            for k, value in enumerate(values):
                if value != 0.0:
                    self.ops.add_scaled(logits_view[k], self.weights, value,
                                        None if self._scratch is None else self._scratch[k])
            norm_view += self.weights

    def _views(self, origin: tuple[int, int, int]):
        """The window's ``(K, D, H, W)`` logits and ``(D, H, W)`` norm views under the tile at ``origin``."""
        d, h, w = self.tile
        z, y, x = origin
        dz = z - self._base
        if not 0 <= dz <= self._logits.shape[1] - d:
            raise ValueError(f"tile at z={z} lies outside the stitch window starting at {self._base}")
        return self._logits[:, dz:dz + d, y:y + h, x:x + w], self._norm[dz:dz + d, y:y + h, x:x + w]

    def advance_raw(self, next_z: int):
        """Finish planes ``[base, next_z)``: ``(z0, weighted logit sums (K, dz, Y, X), weight sums (dz, Y, X))``.

        The blended logits are ``sums / norm``; the output head turns the pair into labels without
        the division (the weights are positive, so class order is unchanged). Pass ``next_z = Z``
        after the last row to flush everything. Returns None when no plane is finished.
        """
        n_window = min(next_z, self.shape[0]) - self._base
        if n_window <= 0:
            return None
        if n_window > self._logits.shape[1]:
            raise ValueError(f"cannot finish {n_window} planes with a window of {self._logits.shape[1]}")
        sums = self.ops.copy(self._logits[:, :n_window])
        norm = self.ops.copy(self._norm[:n_window])
        self.ops.shift_planes(self._logits, n_window)
        self.ops.shift_planes(self._norm, n_window)
        z0, self._base = self._base, self._base + n_window
        return z0, sums, norm
