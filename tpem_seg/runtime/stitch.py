"""Streaming stitcher: weighted accumulation of tile logits, finished z-slab by z-slab."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tpem_seg.runtime.outputs import finish


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
        # One tile's weighted logits (K, D, H, W), reused: no allocation per tile.
        self._scratch = np.empty((n_classes, *self.tile), dtype=np.float32)
        self._base = 0  # padded z of the window's first plane

    def add(self, logits: np.ndarray, origins: Sequence[tuple[int, int, int]]) -> None:
        """Add a batch of tile logits ``(N, K, D, H, W)`` at tile ``origins`` (z, y, x)."""
        for tile_logits, origin in zip(logits, origins):
            logits_view, norm_view = self._views(origin)
            np.multiply(tile_logits, self.weights, out=self._scratch)
            logits_view += self._scratch
            norm_view += self.weights

    def add_constant(self, values: Sequence[float], origins: Sequence[tuple[int, int, int]]) -> None:
        """Add tiles whose logits are the constant ``values[k]`` for class ``k`` everywhere (skipped tiles).

        Equal to :meth:`add` with ``np.broadcast_to(values, (K, D, H, W))`` per tile, without
        materialising it; classes whose value is 0 cost nothing.
        """
        for origin in origins:
            logits_view, norm_view = self._views(origin)
            for k, value in enumerate(values):
                if value != 0.0:
                    np.multiply(self.weights, np.float32(value), out=self._scratch[k])
                    logits_view[k] += self._scratch[k]
            norm_view += self.weights

    def _views(self, origin: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The window's ``(K, D, H, W)`` logits and ``(D, H, W)`` norm views under the tile at ``origin``."""
        d, h, w = self.tile
        z, y, x = origin
        dz = z - self._base
        if not 0 <= dz <= self._logits.shape[1] - d:
            raise ValueError(f"tile at z={z} lies outside the stitch window starting at {self._base}")
        return (self._logits[:, dz:dz + d, y:y + h, x:x + w], self._norm[dz:dz + d, y:y + h, x:x + w])

    def advance(self, next_z: int) -> tuple[int, np.ndarray] | None:
        """Finish planes ``[base, next_z)``: return ``(z0, logits (K, dz, Y, X))`` and slide the window.

        Pass ``next_z = Z`` after the last row to flush everything. Returns None
        when no plane is finished.
        """
        raw = self.advance_raw(next_z)
        if raw is None:
            return None
        z0, sums, norm = raw
        sums /= norm
        return z0, sums

    def advance_raw(self, next_z: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        """As :meth:`advance`, but return ``(z0, weighted logit sums (K, dz, Y, X), weight sums (dz, Y, X))``.

        The blended logits are ``sums / norm``; :func:`finish_sums` turns the pair into labels
        without the division (the weights are positive, so class order is unchanged).
        """
        n_window = min(next_z, self.shape[0]) - self._base
        if n_window <= 0:
            return None
        if n_window > self._logits.shape[1]:
            raise ValueError(f"cannot finish {n_window} planes with a window of {self._logits.shape[1]}")
        sums = self._logits[:, :n_window].copy()
        norm = self._norm[:n_window].copy()
        # Slide: planes past the emitted part move to the front (numpy buffers the overlapping
        # copy itself), the rest starts empty.
        self._logits[:, :-n_window] = self._logits[:, n_window:]
        self._norm[:-n_window] = self._norm[n_window:]
        self._logits[:, -n_window:] = 0.0
        self._norm[-n_window:] = 0.0
        z0, self._base = self._base, self._base + n_window
        return z0, sums, norm


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """``uint8`` index of the largest of ``scores (K, ...)`` along axis 0 (the first on ties).

    Same result as ``scores.argmax(0)`` for finite scores, in K passes over contiguous
    planes instead of numpy's strided reduction over the leading axis (about 1.3x faster
    for K = 3).
    """
    best = scores[0].copy()
    labels = np.zeros(scores.shape[1:], dtype=np.uint8)
    better = np.empty(scores.shape[1:], dtype=bool)
    for k in range(1, scores.shape[0]):
        np.greater(scores[k], best, out=better)
        np.copyto(labels, np.uint8(k), where=better)
        np.maximum(best, scores[k], out=best)
    return labels


def finish_sums(sums: np.ndarray, norm: np.ndarray, activation: str, output: str) -> np.ndarray:
    """The output block for a finished slab from :meth:`Stitcher.advance_raw`'s sums.

    Labels ``(dz, Y, X)`` uint8 come straight from the weighted sums: dividing by the
    positive weight sum changes neither the class order (softmax) nor the sign of a
    logit (sigmoid, foreground where the logit > 0, i.e. probability > 0.5), so neither
    the division nor the softmax is computed. Probabilities and logits divide (in place,
    ``sums`` is consumed) and go through :func:`~tpem_seg.runtime.outputs.finish`.
    """
    if output == "labels":
        best = argmax_classes(sums)
        if activation == "sigmoid":
            on = np.take_along_axis(sums, best[None].astype(np.intp), axis=0)[0] > 0
            return np.where(on, best + 1, 0).astype(np.uint8)
        return best
    sums /= norm
    return finish(sums, activation, output)
