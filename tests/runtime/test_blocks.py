"""Blocks (tpem_seg.runtime.blocks): the global plan's tiles per block, and outputs bit for bit those of
one pass; streaming resampling against scipy's whole-volume zoom."""

import numpy as np
import pytest

from tpem_seg import Segmenter, read_volume, write_volume
from tpem_seg.errors import InputError
from tpem_seg.runtime.blocks import block_cores, block_plan, default_block, redundancy
from tpem_seg.runtime.pipeline import make_plan
from tpem_seg.runtime.resample import ResampledVolume, resampled_shape
from tpem_seg.runtime.tiling import plan_tiles


def test_a_block_takes_exactly_the_global_tiles_touching_its_core():
    shape, tile = (30, 70, 90), (16, 32, 32)
    grid = make_plan(shape, tile, 0.25)
    every = plan_tiles(grid.padded, tile, 0.25)  # no padding here: padded == shape
    for row in block_cores(shape, (12, 40, 50)):
        for core in row:
            plan = block_plan(grid, core)
            got = [(z + plan.origin[0], y + plan.origin[1], x + plan.origin[2])
                   for z in plan.z_starts for y, x in plan.yx_origins]
            want = [o for o in every if all(s < hi and s + t > lo for s, t, (lo, hi) in zip(o, tile, core))]
            assert got == want  # same tiles, same (global, z-major) order


def test_redundancy_is_one_for_a_single_block_and_grows_with_small_blocks():
    grid = make_plan((40, 300, 400), (16, 64, 64), 0.25)
    assert redundancy(grid, (40, 300, 400)) == 1.0
    assert 1.0 < redundancy(grid, (40, 128, 128)) < redundancy(grid, (40, 64, 64))


def test_default_block_keeps_a_row_of_output_in_budget():
    assert default_block((20, 4096, 4096), (16, 64, 64), 1) == (20, 1024, 1024)
    assert default_block((20, 4096, 4096), (16, 64, 64), 6) == (16, 1024, 1024)  # 20 planes would pass 512 MiB
    assert default_block((20, 1024, 3072), (16, 64, 64), 1) == (20, 1024, 1024)
    assert default_block((200, 500, 600), (16, 64, 64), 1) == (64, 500, 600)


@pytest.mark.parametrize("output", ["labels", "probabilities"])
@pytest.mark.parametrize("shape", [(21, 75, 101), (9, 20, 150)])  # ragged edges; thinner than a tile in z and y
def test_blocks_equal_one_pass_bit_for_bit(package_2ch, output, shape):
    volume = np.random.default_rng(11).integers(0, 4000, (2, *shape), dtype=np.uint16)
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output=output, batch_size=3,
                   block="off") as seg:
        expected = seg.segment(volume, axes="CZYX")
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output=output, batch_size=3,
                   block=(8, 40, 48)) as seg:
        got = seg.segment(volume, axes="CZYX")
        summary = seg.last_summary
    np.testing.assert_array_equal(got, expected)
    assert summary.extra["blocks"] > 1 and summary.extra["redundancy"] > 1.0


@pytest.mark.parametrize("out", ["out.tif", "out.zarr"])  # rows of blocks as z-slabs; each block as it is done
def test_segment_file_by_blocks_equals_the_array_run(package_2ch, tmp_path, out):
    volume = np.random.default_rng(12).integers(0, 4000, (2, 18, 50, 70), dtype=np.uint16)
    write_volume(tmp_path / "in.tif", volume, "CZYX")
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", block="off") as seg:
        expected = seg.segment(volume, axes="CZYX")
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", block=(10, 32, 40)) as seg:
        summary = seg.segment_file(tmp_path / "in.tif", tmp_path / out)
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / out).data), expected)
    assert "blocks" in summary.line()


def test_a_zarr_output_written_by_blocks_has_the_pyramid_of_a_slab_run(package_2ch, tmp_path):
    import zarr

    write_volume(tmp_path / "in.tif", np.random.default_rng(13).integers(0, 4000, (2, 12, 45, 61), np.uint16),
                 "CZYX")
    for name, block in (("slabs.zarr", "off"), ("blocks.zarr", (6, 16, 32))):
        with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output="probabilities", block=block) as seg:
            seg.segment_file(tmp_path / "in.tif", tmp_path / name, pyramid=3)
    slabs, blocks = (zarr.open_group(str(tmp_path / n), mode="r") for n in ("slabs.zarr", "blocks.zarr"))
    for level in ("0", "1", "2"):
        np.testing.assert_array_equal(blocks[level][:], slabs[level][:])


def test_block_setting_is_checked(package_2ch):
    with pytest.raises(InputError, match="block"):
        Segmenter(package_2ch, backend="onnxruntime", device="cpu", block=(0, 10, 10))
    with pytest.raises(InputError, match="block"):
        Segmenter(package_2ch, backend="onnxruntime", device="cpu", block="big")


def test_resampled_volume_reads_boxes_like_scipy_zoom(rng):
    from scipy import ndimage

    from tpem_seg import Volume

    data = rng.random((2, 7, 30, 41), dtype=np.float32) * 100
    source = Volume(data, "CZYX", (5.0, 2.0, 2.0))
    view = ResampledVolume(source, (5.0, 0.8, 1.3))
    assert view.shape_zyx == resampled_shape((7, 30, 41), (5.0, 2.0, 2.0), (5.0, 0.8, 1.3))
    whole = np.stack([ndimage.zoom(c, [n / o for n, o in zip(view.shape_zyx, c.shape)], order=1,
                                   mode="nearest", grid_mode=False) for c in data])
    np.testing.assert_allclose(view.read_czyx(), whole, rtol=1e-6, atol=1e-5)
    box = ((2, 5), (10, 40), (3, 17))
    np.testing.assert_array_equal(view.read_box(box), view.read_czyx()[(slice(None), *(slice(*b) for b in box))])


def test_streaming_resampling_matches_the_whole_volume_path(package_1ch):
    """Oracle: scipy zooms the whole volume to the model's voxel size and the logits back."""
    from scipy import ndimage

    volume = np.random.default_rng(13).integers(0, 255, (9, 45, 52), dtype=np.uint8)
    spacing = (5.0, 1.6, 1.6)
    zoom = [n / o for n, o in zip(resampled_shape(volume.shape, spacing, (5.0, 1.0, 1.0)), volume.shape)]
    up = ndimage.zoom(volume.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=False)
    with Segmenter(package_1ch, backend="onnxruntime", device="cpu", output="logits") as seg:
        logits = seg.segment(up, spacing=(5.0, 1.0, 1.0))
    back = np.stack([ndimage.zoom(k, [n / o for n, o in zip(volume.shape, k.shape)], order=1, mode="nearest",
                                  grid_mode=False) for k in logits])
    e = np.exp(back - back.max(0))
    expected = e / e.sum(0)
    with Segmenter(package_1ch, backend="onnxruntime", device="cpu", output="probabilities",
                   block=(4, 24, 30)) as seg:
        got = seg.segment(volume, spacing=spacing).astype(np.float32)
        assert seg.last_summary.resampled and seg.last_summary.extra["blocks"] > 1
    np.testing.assert_allclose(got, expected, atol=1e-3)  # float16 output
    with Segmenter(package_1ch, backend="onnxruntime", device="cpu", output="logits", block=(4, 24, 30)) as seg:
        got_logits = seg.segment(volume, spacing=spacing)
    e = np.exp(got_logits - got_logits.max(0))
    np.testing.assert_allclose(e / e.sum(0), expected, atol=1e-5)
    with Segmenter(package_1ch, backend="onnxruntime", device="cpu", block=(4, 24, 30)) as seg:
        labels = seg.segment(volume, spacing=spacing)
    clear = np.abs(expected[1] - expected[0]) > 1e-5  # exact ties may go either way
    np.testing.assert_array_equal(labels[clear], expected.argmax(0)[clear])


def test_a_strided_sample_equals_the_stride_of_whole_planes(tmp_path, monkeypatch):
    # the normaliser's sample of wide planes is read strided (in strips when resampled), never whole planes
    import tpem_seg.runtime.resample as resample_module

    data = np.random.default_rng(5).integers(0, 4000, (4, 300, 410), dtype=np.uint16)
    write_volume(tmp_path / "in.tif", data, "ZYX", spacing=(5.0, 0.7, 0.7))
    volume = read_volume(tmp_path / "in.tif")
    np.testing.assert_array_equal(volume.read_czyx(1, 3, yx_step=3), data[None, 1:3, ::3, ::3])
    resampled = ResampledVolume(volume, (5.0, 0.994, 0.994))
    monkeypatch.setattr(resample_module, "STRIP_VOXELS", 1000)  # many strips of 3 rows
    np.testing.assert_array_equal(resampled.read_czyx(1, 3, yx_step=3), resampled.read_czyx(1, 3)[..., ::3, ::3])
