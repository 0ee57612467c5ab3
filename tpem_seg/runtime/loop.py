"""The one stitch loop: tiles in, finished output slabs out.

For every item of a tile stream (:class:`~tpem_seg.runtime.pipeline.TileBatch`-like batches and
:class:`~tpem_seg.runtime.pipeline.RowDone` markers, in the plan's z-major order)::

    batch     predict its non-empty tiles -> add them; add a constant for its skipped tiles; count
    row done  advance the stitcher -> crop to the plan's output part -> finish (output head) -> emit

The CPU path, the GPU path (whose transport, :mod:`~tpem_seg.runtime.gpu`, supplies the stream and
the predictor), blocks and training evaluation all run this loop; only the array operations differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from tpem_seg.runtime.arrays import NUMPY
from tpem_seg.runtime.outputs import OutputHead
from tpem_seg.runtime.pipeline import RowDone
from tpem_seg.runtime.stitch import Stitcher

#: Flip combinations over the spatial axes of a (N, C, D, H, W) batch (nnU-Net's mirroring).
TTA_FLIPS = ((), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))

#: Logit margin given to background on skipped (empty) tiles: softmax puts 1 - 2e-4 on background
#: for 3 classes (sigmoid: every foreground channel at -10, probability 4.5e-5).
EMPTY_LOGIT = 10.0


def background_logits(n_classes: int, activation: str) -> list[float]:
    """Per-class logits of a skipped tile: background (class 0) ahead by :data:`EMPTY_LOGIT` (softmax),
    or every foreground channel at ``-EMPTY_LOGIT`` (sigmoid, no background channel)."""
    if activation == "sigmoid":
        return [-EMPTY_LOGIT] * n_classes
    return [EMPTY_LOGIT] + [0.0] * (n_classes - 1)


def flip_passes(infer: Callable, ops=NUMPY) -> Callable[..., Iterator]:
    """``passes(tiles)`` yields ``infer``'s logits for each flip of :data:`TTA_FLIPS` in turn (the
    identity first), each flipped back onto the tiles' grid.

    ``infer`` maps tiles ``(N, C, D, H, W)`` to logits ``(N, K, D, H, W)`` (numpy, or tensors for
    torch ops). Test-time augmentation averages the passes (:func:`with_flips`); an uncertainty run
    without dropout measures their spread (:mod:`~tpem_seg.runtime.uncertainty`).
    """
    def passes(tiles):
        for axes in TTA_FLIPS:
            logits = infer(ops.flip(tiles, axes) if axes else tiles)
            yield ops.flip(logits, axes) if axes else logits

    return passes


def with_flips(infer: Callable, ops=NUMPY) -> Callable:
    """``infer`` averaged over the 8 flips of :data:`TTA_FLIPS` (each output flipped back): the same
    contract as ``infer`` at 8x the compute."""
    passes = flip_passes(infer, ops)

    def flipped(tiles):
        total = None
        for logits in passes(tiles):
            total = logits if total is None else total + logits
        return total / len(TTA_FLIPS)

    return flipped


def host_predictor(infer: Callable[[np.ndarray], np.ndarray]) -> Callable:
    """A loop predictor over host batches: ``infer`` on a batch's non-empty tiles (all when not screened)."""
    def predict(batch):
        tiles = batch.tiles if batch.empty is None else batch.tiles[~batch.empty]
        return infer(tiles) if len(tiles) else None

    return predict


@dataclass
class LoopCounters:
    """What one pass of the loop did: tiles seen, and of them skipped as empty."""

    tiles: int = 0
    skipped: int = 0


def stitch_loop(items: Iterable, plan, stitcher: Stitcher, predict: Callable, head: OutputHead,
                background: Sequence[float], emit: Callable[[int, object], None],
                progress: Callable[[int], None] = lambda n: None) -> LoopCounters:
    """Run the loop of the module docstring over ``items``; returns its counters.

    Args:
        items: batches (``origins``: tile origins in the stitcher's grid; ``empty``: bool per tile, or
            None when tiles are not screened) and :class:`RowDone` markers, in z-major order.
        plan: gives ``output_part(z0, depth)``: ``(first output plane, (z, y, x) slices into the
            slab)`` of a finished slab, or None when none of it is output.
        predict: ``predict(batch)`` -> logits ``(N, K, D, H, W)`` of the batch's non-empty tiles, in
            order (rows past them, from zero tiles that filled the call, are not used); called for
            every batch (a transport may release buffers in it) but only used when the batch has
            non-empty tiles.
        head: turns weighted sums into the output block.
        background: per-class logits added for skipped tiles.
        emit: ``emit(first_plane, block)`` for each finished slab's output, in z order.
    """
    counters = LoopCounters()
    ops = stitcher.ops
    for item in items:
        if isinstance(item, RowDone):
            finished = stitcher.advance_raw(item.next_z)
            if finished is None:
                continue
            z0, sums, norm = finished
            part = plan.output_part(z0, sums.shape[1])
            if part is not None:
                first, crop = part
                emit(first, head.from_sums(sums[(slice(None), *crop)], norm[crop], ops))
            continue
        empty = item.empty
        full = list(item.origins) if empty is None else [o for o, e in zip(item.origins, empty) if not e]
        logits = predict(item)
        if full:
            stitcher.add(logits, full)
        if empty is not None and empty.any():
            skipped = [o for o, e in zip(item.origins, empty) if e]
            stitcher.add_constant(background, skipped)
            counters.skipped += len(skipped)
        counters.tiles += len(item.origins)
        progress(len(item.origins))
    return counters
