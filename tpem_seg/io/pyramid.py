"""Pyramid levels of an OME-Zarr image for viewers: level n halves y and x of level n - 1.

z is kept (two-photon stacks are already coarse in z). Labels take every other voxel (class
indices cannot be averaged); other images the mean of each 2x2 (rounded for integers), the last
row or column repeated where a size is odd. The streaming writer halves each slab as it writes it;
a distributed run fills level 0 by blocks and then every higher level one chunk at a time
(:func:`fill_chunk`), reading only the 2x2 chunks' worth of the level below: the same values, in
memory bounded by a chunk, whatever the plane size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


def halve_yx(slab: np.ndarray, labels: bool) -> np.ndarray:
    """The next pyramid level of ``(C, dz, Y, X)``: every other voxel for labels, 2x2 means otherwise;
    ``(C, dz, ceil(Y / 2), ceil(X / 2))``."""
    if labels:
        return slab[..., ::2, ::2]
    y, x = slab.shape[-2:]
    padded = np.pad(slab, [(0, 0), (0, 0), (0, y % 2), (0, x % 2)], mode="edge")
    c, dz, py, px = padded.shape
    means = padded.reshape(c, dz, py // 2, 2, px // 2, 2).mean(axis=(3, 5), dtype=np.float32)
    if slab.dtype.kind in "iu":
        means = np.rint(means)
    return means.astype(slab.dtype)


def level_chunks(folder: str | Path, level: int) -> Iterator[tuple[tuple[int, int], ...]]:
    """The chunks of pyramid ``level`` of the OME-Zarr image at ``folder``: spatial boxes, ``(lo, hi)``
    per axis ``(z, y, x)``, in z, then y, then x order."""
    import zarr

    array = zarr.open_array(str(Path(folder) / str(level)), mode="r")
    shape, chunks = array.shape[-3:], array.chunks[-3:]
    for z0 in range(0, shape[0], chunks[0]):
        for y0 in range(0, shape[1], chunks[1]):
            for x0 in range(0, shape[2], chunks[2]):
                yield ((z0, min(z0 + chunks[0], shape[0])), (y0, min(y0 + chunks[1], shape[1])),
                       (x0, min(x0 + chunks[2], shape[2])))


def fill_chunk(folder: str | Path, level: int, box: Sequence[tuple[int, int]], labels: bool) -> None:
    """Write ``box`` (a chunk of ``level`` >= 1) from the level below: its 2x2 region, halved."""
    import zarr

    below = zarr.open_array(str(Path(folder) / str(level - 1)), mode="r")
    target = zarr.open_array(str(Path(folder) / str(level)), mode="r+")
    (z0, z1), (y0, y1), (x0, x1) = box
    source = ((z0, z1), (2 * y0, min(2 * y1, below.shape[-2])), (2 * x0, min(2 * x1, below.shape[-1])))
    region = below[box_index(source, below.ndim)]
    halved = halve_yx(region if below.ndim == 4 else region[None], labels)
    target[box_index(box, target.ndim)] = halved if target.ndim == 4 else halved[0]


def fill_levels(folder: str | Path, levels: int, labels: bool) -> None:
    """Fill levels ``1 .. levels - 1`` of the image at ``folder`` from level 0, chunk by chunk, in this process."""
    for level in range(1, levels):
        for box in level_chunks(folder, level):
            fill_chunk(folder, level, box, labels)


def box_index(box: Sequence[tuple[int, int]], ndim: int) -> tuple[slice, ...]:
    """The index of the spatial ``box`` (``(lo, hi)`` per axis z, y, x) in a ZYX (``ndim`` 3) or CZYX
    (4, every channel) array."""
    index = tuple(slice(lo, hi) for lo, hi in box)
    return (slice(None), *index) if ndim == 4 else index
