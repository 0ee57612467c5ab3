"""Blocks: memory bounded by a block in z, y and x, with results bit-identical to one pass.

A block's *core* is the box of output voxels it owns (a whole number of output chunks, except at
the volume's far edges). It takes every tile of the *global* tile plan that touches its core (never
a local re-plan: the grid's last-tile and padding rules would move and make seams), in the global
z-major order, reads only the window those tiles cover, normalises it with the volume's normaliser,
stitches with the one stitch loop (:func:`~tpem_seg.runtime.loop.stitch_loop`) and keeps only its
core. Every core voxel then receives the same tile logits in the same order as in one pass over the
volume, so its sums, and the output, are bit for bit the same.

Memory is the block's window (``(K + 1) * tile_z`` planes of it for the stitcher, a ``tile_z`` slab
of input), whatever the plane size; tiles near block edges are computed by both neighbours
(:func:`redundancy`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from tpem_seg.runtime.normalize import Normalizer
from tpem_seg.runtime.outputs import OutputHead
from tpem_seg.runtime.pipeline import Box, TilePlan, read_box
from tpem_seg.runtime.resample import CHUNK_VOXELS, interpolate, source_box


@dataclass(frozen=True)
class BlockPlan:
    """The part of a global :class:`~tpem_seg.runtime.pipeline.TilePlan` that a block runs.

    Coordinates: ``core`` is in volume voxels, ``(lo, hi)`` per axis ``(z, y, x)``; ``origin`` is
    the padded-grid position of the block's window, whose shape is ``padded``; ``z_starts`` and
    ``yx_origins`` are the touching tiles' origins relative to ``origin``, in the global order. It
    has what :func:`~tpem_seg.runtime.pipeline.iter_tiles`, the stitcher and the loop ask of a plan.
    """

    grid: TilePlan
    core: Box
    origin: tuple[int, int, int]
    padded: tuple[int, int, int]
    z_starts: tuple[int, ...]
    yx_origins: tuple[tuple[int, int], ...]

    @property
    def tile(self) -> tuple[int, int, int]:
        return self.grid.tile

    @property
    def n_tiles(self) -> int:
        return len(self.z_starts) * len(self.yx_origins)

    def _core_in_window(self) -> list[tuple[int, int]]:
        return [(lo + pad - o, hi + pad - o) for (lo, hi), (pad, _), o in zip(self.core, self.grid.pads, self.origin)]

    def output_part(self, z0: int, depth: int) -> tuple[int, tuple[slice, slice, slice]] | None:
        """The core's part of finished window planes ``z0 .. z0 + depth``: ``(first volume plane,
        (z, y, x) slices into the slab)``, or None when none of them is in the core."""
        (cz0, cz1), (cy0, cy1), (cx0, cx1) = self._core_in_window()
        lo, hi = max(z0, cz0), min(z0 + depth, cz1)
        if hi <= lo:
            return None
        return self.core[0][0] + lo - cz0, (slice(lo - z0, hi - z0), slice(cy0, cy1), slice(cx0, cx1))

    def row_batches(self, batch_size: int) -> list[tuple[tuple[tuple[int, int], ...], int]]:
        """Per network call of the global plan's row that has tiles here: those tiles (window
        coordinates, global order) and the size of the global call, so each tile's logits come from a
        call of the same size as in one pass."""
        (oy, ox), (hy, hx) = self.origin[1:], (self.padded[1] - self.tile[1], self.padded[2] - self.tile[2])
        out = []
        for chunk, size in self.grid.row_batches(batch_size):
            mine = tuple((y - oy, x - ox) for y, x in chunk if oy <= y <= oy + hy and ox <= x <= ox + hx)
            if mine:
                out.append((mine, size))
        return out

    def read_slab(self, volume, z: int, normalizer: Normalizer, channels: Sequence[int] | None) -> np.ndarray:
        """Normalised window slab ``(C, tile_z, Yw, Xw)`` float32 for window planes ``[z, z + tile_z)``;
        voxels in the padding are zero after normalisation (as in the global plan)."""
        start = (self.origin[0] + z, self.origin[1], self.origin[2])
        extent = (self.tile[0], self.padded[1], self.padded[2])
        box, place = [], []
        for s, e, (pad, _), n in zip(start, extent, self.grid.pads, self.grid.shape):
            lo, hi = max(s - pad, 0), min(s - pad + e, n)
            box.append((lo, max(hi, lo)))
            place.append(slice(lo + pad - s, max(hi, lo) + pad - s))
        block = normalizer(read_box(volume, tuple(box), channels))
        slab = np.zeros((block.shape[0], *extent), dtype=np.float32)
        slab[(slice(None), *place)] = block
        return slab


def touching(starts: Sequence[int], tile: int, lo: int, hi: int) -> list[int]:
    """Indices of the tile ``starts`` whose ``[s, s + tile)`` meets ``[lo, hi)``."""
    return [i for i, s in enumerate(starts) if s < hi and s + tile > lo]


def block_plan(grid: TilePlan, core: Box) -> BlockPlan:
    """The tiles of ``grid`` touching ``core`` (volume voxels), and the window they cover."""
    ys = sorted({y for y, _ in grid.yx_origins})
    xs = sorted({x for _, x in grid.yx_origins})
    axes = (list(grid.z_starts), ys, xs)
    chosen = []
    for starts, t, (lo, hi), (pad, _) in zip(axes, grid.tile, core, grid.pads):
        index = touching(starts, t, lo + pad, hi + pad)
        if not index:
            raise ValueError(f"block core {core} lies outside the tile grid")
        chosen.append([starts[i] for i in index])
    origin = tuple(c[0] for c in chosen)
    padded = tuple(c[-1] + t - o for c, t, o in zip(chosen, grid.tile, origin))
    keep_y, keep_x = set(chosen[1]), set(chosen[2])
    yx = tuple((y - origin[1], x - origin[2]) for y, x in grid.yx_origins if y in keep_y and x in keep_x)
    return BlockPlan(grid, core, origin, padded, tuple(z - origin[0] for z in chosen[0]), yx)


def block_cores(shape: Sequence[int], block: Sequence[int]) -> Iterator[list[Box]]:
    """Block cores over a volume of ``shape`` (z, y, x), row by row: each row is the blocks sharing
    one z range, in y-then-x order. Cores are ``block`` voxels (clipped at the far edges)."""
    edges = block_edges(shape, block)
    for z in edges[0]:
        yield [(z, y, x) for y in edges[1] for x in edges[2]]


def block_edges(shape: Sequence[int], block: Sequence[int]) -> list[list[tuple[int, int]]]:
    """Per axis (z, y, x), the ``(lo, hi)`` ranges of the block cores (clipped at the far edges)."""
    return [[(lo, min(lo + b, n)) for lo in range(0, n, b)] for n, b in zip(shape, block)]


def block_core(shape: Sequence[int], block: Sequence[int], index: int) -> Box:
    """The core of block ``index`` in the order of :func:`block_cores` (z rows, then y, then x)."""
    edges = block_edges(shape, block)
    iz, rest = divmod(int(index), len(edges[1]) * len(edges[2]))
    iy, ix = divmod(rest, len(edges[2]))
    return edges[0][iz], edges[1][iy], edges[2][ix]


def redundancy(grid: TilePlan, block: Sequence[int]) -> float:
    """Tiles computed over all blocks / tiles of one pass (1.0: no tile computed twice)."""
    total = sum(block_plan(grid, core).n_tiles for row in block_cores(grid.shape, block) for core in row)
    return total / grid.n_tiles


#: Default block core in y and x: whole 1024² zarr chunks (:func:`~tpem_seg.io.writers.zarr_chunks`).
BLOCK_YX = 1024
#: Deepest default block core (zarr chunks hold at most 64 planes).
BLOCK_Z = 64
#: Output bytes a row of blocks may hold before it is written (it spans whole planes). Cutting a
#: thin stack in z costs more (every tile near the cut runs twice) than holding its labels.
ROW_BUDGET = 512 * 2**20


def default_block(shape: Sequence[int], tile: Sequence[int], voxel_bytes: int) -> tuple[int, int, int]:
    """A block for ``shape`` (z, y, x): cores of :data:`BLOCK_YX` in y and x, and as deep as
    :data:`BLOCK_Z` allows while one row's output (``voxel_bytes`` per voxel, whole planes) fits
    :data:`ROW_BUDGET`, but never thinner than a tile."""
    z, y, x = (int(s) for s in shape)
    depth = ROW_BUDGET // max(1, y * x * voxel_bytes)
    return (int(min(z, BLOCK_Z, max(int(tile[0]), depth))), min(y, BLOCK_YX), min(x, BLOCK_YX))


def n_blocks(shape: Sequence[int], block: Sequence[int]) -> int:
    return math.prod(-(-int(n) // int(b)) for n, b in zip(shape, block))


def output_array(output: str, n_classes: int, shape: Sequence[int]) -> np.ndarray:
    """An empty output of kind ``output`` over spatial ``shape``: labels ``(Z, Y, X)`` uint8,
    probabilities ``(K, Z, Y, X)`` float16, logits ``(K, Z, Y, X)`` float32."""
    if output == "labels":
        return np.zeros(tuple(shape), dtype=np.uint8)
    return np.zeros((n_classes, *shape), dtype=np.float16 if output == "probabilities" else np.float32)


def run_blocks(engine, source, grid: TilePlan, normalizer: Normalizer, channels: Sequence[int] | None,
               output: str, block: Sequence[int], sink, state, out_shape: Sequence[int] | None = None,
               progress: bool = False, block_sink=None) -> int:
    """Run ``source`` block by block; ``sink(first_plane, slab)`` gets each row of blocks' output, or,
    given ``block_sink``, ``block_sink(core, output)`` each block's as it is done (for a chunked
    output: then no row is held, and memory is set by the block alone).

    Args:
        engine: a :class:`~tpem_seg.runtime.engine.TileEngine`; grid: the global plan over ``source``.
        block: the block core ``(z, y, x)`` in output voxels.
        out_shape: the output grid when ``source`` is resampled (a
            :class:`~tpem_seg.runtime.resample.ResampledVolume` of the input): each output block then
            takes the source voxels it interpolates from (a one-voxel halo), their blended logits are
            brought back by linear interpolation and go through the output head. None: the output is
            the source's grid.
        state: the run's :class:`~tpem_seg.runtime.engine.RunState`; counts every tile computed.

    Returns the number of blocks. A row spans whole planes of the output (``block[0]`` of them),
    so it is what a z-slab writer takes; nothing else scales with the plane.
    """
    shape = tuple(out_shape) if out_shape is not None else grid.shape
    head = OutputHead(engine.activation, output)
    count = 0
    with tqdm(total=n_blocks(shape, block), unit="block", desc="segment", disable=not progress, leave=False) as bar:
        for row in block_cores(shape, block):
            (z_lo, z_hi) = row[0][0]
            slab = None if block_sink else output_array(output, engine.n_classes, (z_hi - z_lo, *shape[1:]))
            for core in row:
                if slab is None:
                    target = output_array(output, engine.n_classes, [hi - lo for lo, hi in core])
                else:
                    target = slab[(Ellipsis, *(slice(lo - o, hi - o) for (lo, hi), o in zip(core, (z_lo, 0, 0))))]
                run_block(engine, source, grid, normalizer, channels, output, core, target, state, out_shape, head)
                if slab is None:
                    block_sink(core, target)
                count += 1
                bar.update(1)
            if slab is not None:
                sink(z_lo, slab)
    return count


def run_block(engine, source, grid: TilePlan, normalizer: Normalizer, channels: Sequence[int] | None,
              output: str, core: Box, target: np.ndarray, state, out_shape: Sequence[int] | None = None,
              head: OutputHead | None = None) -> None:
    """Segment one block: the output of the voxels ``core`` (output voxels) into ``target``.

    ``target`` has the core's shape: ``(dz, dy, dx)`` for labels, ``(K, dz, dy, dx)`` otherwise
    (:func:`output_array`). Every other argument is as for :func:`run_blocks`; a block run alone (on a
    dask worker) gives the same voxels as within a whole :func:`run_blocks` run.
    """
    if out_shape is None:
        _run_core(engine, source, block_plan(grid, core), normalizer, channels, output, target, state)
        return
    shape = tuple(out_shape)
    needed = source_box(core, grid.shape, shape)
    logits = output_array("logits", engine.n_classes, [hi - lo for lo, hi in needed])
    _run_core(engine, source, block_plan(grid, needed), normalizer, channels, "logits", logits, state)
    _bring_back(logits, needed, core, grid.shape, shape, head or OutputHead(engine.activation, output), target)


def _bring_back(logits: np.ndarray, needed: Box, core: Box, grid_shape, shape, head: OutputHead,
                target: np.ndarray) -> None:
    """Interpolate ``logits`` (over the source voxels ``needed``) to the output voxels ``core`` and put
    them through ``head`` into ``target``, a few planes at a time (bounded temporaries)."""
    (z0, z1), rest = core[0], core[1:]
    plane = logits.shape[0] * (rest[0][1] - rest[0][0]) * (rest[1][1] - rest[1][0])
    step = max(1, CHUNK_VOXELS // max(plane, 1))
    origin = [lo for lo, _ in needed]
    for a in range(z0, z1, step):
        b = min(a + step, z1)
        values = interpolate(logits, origin, ((a, b), *rest), grid_shape, shape)
        target[..., a - z0:b - z0, :, :] = head.from_logits(values)


def _run_core(engine, source, plan: BlockPlan, normalizer: Normalizer, channels, output: str,
              target: np.ndarray, state) -> None:
    """Stitch ``plan`` and write its core's output into ``target`` (the core's voxels, z first)."""
    z0 = plan.core[0][0]

    def place(first: int, part: np.ndarray) -> None:
        target[..., first - z0:first - z0 + part.shape[-3], :, :] = part

    engine.run(source, plan, normalizer, channels, output, place, state)
