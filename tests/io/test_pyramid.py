"""Pyramid levels filled chunk by chunk (as a distributed run fills them) equal the streaming
writer's, on levels of several chunks with odd sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tpem_seg.io import write_volume
from tpem_seg.io.pyramid import fill_chunk, halve_yx, level_chunks
from tpem_seg.io.writers import create_zarr_image, zarr_chunks

SPACING = (5.0, 0.5, 0.5)
CLASSES = ["background", "vessel"]


def fill_by_chunks(folder: Path, data: np.ndarray, axes: str, levels: int, labels: bool) -> None:
    """An empty image of ``levels`` levels, level 0 set to ``data``, the others by fill_chunk."""
    arrays = create_zarr_image(folder, folder, data.shape, data.dtype, axes, SPACING,
                               [] if labels else CLASSES, CLASSES if labels else [],
                               zarr_chunks(data.shape, data.dtype), levels=levels)
    arrays[0][...] = data
    for level in range(1, levels):
        for box in level_chunks(folder, level):
            fill_chunk(folder, level, box, labels)


@pytest.mark.parametrize("axes, shape, dtype", [("ZYX", (3, 2101, 1099), np.uint8),
                                                 ("CZYX", (2, 2, 1031, 2053), np.float16)])
def test_chunk_by_chunk_levels_equal_the_streaming_writers(tmp_path, axes, shape, dtype):
    import zarr

    rng = np.random.default_rng(0)
    labels = axes == "ZYX"
    data = rng.integers(0, 2, shape).astype(dtype) if labels else rng.random(shape).astype(dtype)
    names = {"label_names": CLASSES} if labels else {"channel_names": CLASSES}
    write_volume(tmp_path / "streamed.zarr", data, axes, spacing=SPACING, levels=3, **names)
    fill_by_chunks(tmp_path / "chunked.zarr", data, axes, 3, labels)
    streamed = zarr.open_group(str(tmp_path / "streamed.zarr"), mode="r")
    chunked = zarr.open_group(str(tmp_path / "chunked.zarr"), mode="r")
    assert len(list(level_chunks(tmp_path / "chunked.zarr", 1))) > 1  # the level has several chunks
    for level in ("1", "2"):
        np.testing.assert_array_equal(chunked[level][:], streamed[level][:])
    if labels:  # numpy's slicing is the oracle for labels: every other voxel
        np.testing.assert_array_equal(chunked["2"][:], data[:, ::4, ::4])


def test_halving_means_2x2_and_repeats_the_last_row_where_odd():
    slab = np.arange(2 * 3 * 5, dtype=np.float32).reshape(1, 2, 3, 5)
    half = halve_yx(slab, labels=False)
    assert half.shape == (1, 2, 2, 3)
    assert half[0, 0, 0, 0] == slab[0, 0, :2, :2].mean()
    assert half[0, 0, 1, 2] == slab[0, 0, 2, 4]  # the odd corner: its own value, repeated
