"""read_volume: every input format, axes and voxel size from metadata, errors, laziness, real data."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tpem_seg.errors import InputError
from tpem_seg.io import Volume, read_volume
from tpem_seg.io._lazy import LazyArray


def czyx_of(volume: Volume) -> np.ndarray:
    return volume.read_czyx()


# -- TIFF flavours -----------------------------------------------------------------------------------


def test_plain_tiff_stack_is_zyx_without_spacing(tmp_path, zyx):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, zyx, metadata=None)  # no description: a bare page sequence
    volume = read_volume(path)
    assert volume.axes == "ZYX" and volume.spacing is None and volume.dtype == np.uint16
    assert isinstance(volume.data, LazyArray)
    np.testing.assert_array_equal(volume.read_czyx(2, 4)[0], zyx[2:4])


def test_pages_written_one_by_one_are_a_z_stack(tmp_path, zyx):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for plane in zyx:
            tif.write(plane, metadata=None, compression="zlib")
    volume = read_volume(path)
    assert volume.axes == "ZYX" and volume.shape_zyx == zyx.shape
    np.testing.assert_array_equal(volume.read_czyx()[0], zyx)


def test_imagej_hyperstack_two_channels(tmp_path, czyx):
    path = tmp_path / "hyper.tif"
    zcyx = np.ascontiguousarray(czyx.transpose(1, 0, 2, 3))
    tifffile.imwrite(path, zcyx, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"axes": "ZCYX", "spacing": 2.5, "unit": "um"})
    volume = read_volume(path)
    assert volume.axes == "ZCYX" and volume.n_channels == 2
    assert volume.spacing == pytest.approx((2.5, 0.5, 0.5))
    np.testing.assert_array_equal(volume.read_czyx(1, 3), czyx[:, 1:3])
    np.testing.assert_array_equal(volume.read_czyx(channels=[1])[0], czyx[1])


@pytest.mark.parametrize("unit,factor", [("micron", 1.0), ("\\u00B5m", 1.0), ("nm", 1e-3), ("mm", 1e3)])
def test_imagej_units_are_converted_to_micrometres(tmp_path, zyx, unit, factor):
    path = tmp_path / "units.tif"
    tifffile.imwrite(path, zyx, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"axes": "ZYX", "spacing": 3.0, "unit": unit})
    assert read_volume(path).spacing == pytest.approx((3.0 * factor, 0.5 * factor, 0.25 * factor))


def test_imagej_in_pixels_has_no_spacing(tmp_path, zyx):
    path = tmp_path / "pixels.tif"
    tifffile.imwrite(path, zyx, imagej=True, metadata={"axes": "ZYX"})
    assert read_volume(path).spacing is None


def test_imagej_frames_without_slices_are_read_as_z(tmp_path, zyx, caplog):
    path = tmp_path / "frames.tif"
    tifffile.imwrite(path, zyx, imagej=True, metadata={"axes": "TYX"})
    with caplog.at_level(logging.WARNING):
        volume = read_volume(path)
    assert volume.axes == "ZYX" and "time points as z planes" in caplog.text


def test_time_series_is_refused(tmp_path, rng, one_line):
    path = tmp_path / "tzyx.tif"
    tifffile.imwrite(path, rng.integers(0, 9, (2, 3, 8, 8), dtype=np.uint8), imagej=True,
                     metadata={"axes": "TZYX"})
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert "time series" in one_line(err)


@pytest.mark.parametrize("unit,factor", [("µm", 1.0), ("nm", 1e-3)])
def test_ome_tiff_axes_spacing_and_channel_names(tmp_path, czyx, unit, factor):
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(path, czyx, ome=True, metadata={
        "axes": "CZYX", "PhysicalSizeZ": 4.0, "PhysicalSizeY": 0.75, "PhysicalSizeX": 0.5,
        "PhysicalSizeZUnit": unit, "PhysicalSizeYUnit": unit, "PhysicalSizeXUnit": unit,
        "Channel": {"Name": ["vessels", "neurons"]}})
    volume = read_volume(path)
    assert volume.axes == "CZYX" and volume.channel_names == ["vessels", "neurons"]
    assert volume.spacing == pytest.approx((4.0 * factor, 0.75 * factor, 0.5 * factor))
    np.testing.assert_array_equal(volume.read_czyx(), czyx)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd"])
def test_compressed_tiff(tmp_path, zyx, compression):
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, zyx, compression=compression, rowsperstrip=8)
    volume = read_volume(path)
    assert volume.axes == "ZYX"
    np.testing.assert_array_equal(volume.read_czyx(3, 5)[0], zyx[3:5])


def test_bigtiff(tmp_path, zyx):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, zyx, bigtiff=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    np.testing.assert_array_equal(read_volume(path).read_czyx()[0], zyx)


def test_4d_tiff_without_axes_needs_axes(tmp_path, czyx, one_line):
    path = tmp_path / "noaxes.tif"
    tifffile.imwrite(path, czyx, metadata={})  # tifffile "shaped": a shape but no axes
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert "--axes CZYX" in one_line(err)
    volume = read_volume(path, axes="CZYX")
    np.testing.assert_array_equal(volume.read_czyx(), czyx)


def test_single_image_becomes_one_plane_stack(tmp_path, zyx):
    path = tmp_path / "plane.tif"
    tifffile.imwrite(path, zyx[0])
    volume = read_volume(path)
    assert volume.axes == "ZYX" and volume.shape_zyx == (1, *zyx.shape[1:])


# -- npy and zarr ------------------------------------------------------------------------------------


def test_npy_3d_is_zyx_and_memory_mapped(tmp_path, zyx):
    path = tmp_path / "v.npy"
    np.save(path, zyx)
    volume = read_volume(path)
    assert volume.axes == "ZYX" and volume.spacing is None
    block = volume.data[0:1]
    block += 1  # reads are copies the caller may change, never views of the read-only map
    np.testing.assert_array_equal(volume.data[0:1], zyx[0:1])
    np.testing.assert_array_equal(volume.read_czyx(1, 2)[0], zyx[1:2])


def test_npy_4d_needs_axes(tmp_path, czyx, one_line):
    path = tmp_path / "v4.npy"
    np.save(path, czyx)
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert "--axes CZYX" in one_line(err)
    assert read_volume(path, axes="czyx").axes == "CZYX"


def test_axes_override_may_skip_singletons(tmp_path, zyx):
    path = tmp_path / "one.npy"
    np.save(path, zyx[np.newaxis])
    volume = read_volume(path, axes="ZYX")
    assert volume.axes == "ZYX" and volume.data.shape == zyx.shape
    np.testing.assert_array_equal(volume.read_czyx(0, 2)[0], zyx[:2])


def test_axes_override_of_wrong_length(tmp_path, zyx, one_line):
    path = tmp_path / "v.npy"
    np.save(path, zyx)
    with pytest.raises(InputError) as err:
        read_volume(path, axes="CZYX")
    assert "--axes" in one_line(err)


def test_axes_override_wins_over_metadata(tmp_path, czyx):
    path = tmp_path / "swap.ome.tif"
    tifffile.imwrite(path, czyx, ome=True, metadata={"axes": "CZYX"})
    volume = read_volume(path, axes="ZCYX")  # the user knows the file is mislabelled
    assert volume.axes == "ZCYX" and volume.n_channels == czyx.shape[1]


def test_spacing_override(tmp_path, zyx):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, zyx, imagej=True, resolution=(2, 2), metadata={"spacing": 3.0, "unit": "um"})
    assert read_volume(path).spacing == pytest.approx((3.0, 0.5, 0.5))
    assert read_volume(path, spacing=(5, 1, 1)).spacing == (5.0, 1.0, 1.0)


def test_plain_zarr_array(tmp_path, zyx):
    import zarr

    path = tmp_path / "plain.zarr"
    array = zarr.create_array(str(path), shape=zyx.shape, chunks=(2, 20, 24), dtype=zyx.dtype)
    array[:] = zyx
    volume = read_volume(path)
    assert volume.axes == "ZYX" and volume.spacing is None
    np.testing.assert_array_equal(volume.read_czyx(2, 6)[0], zyx[2:6])


def test_zarr_array_with_xarray_dimensions(tmp_path, czyx):
    import zarr

    path = tmp_path / "dims.zarr"
    array = zarr.create_array(str(path), shape=czyx.shape, dtype=czyx.dtype, zarr_format=2)
    array[:] = czyx
    array.attrs["_ARRAY_DIMENSIONS"] = ["c", "z", "y", "x"]
    assert read_volume(path).axes == "CZYX"


def _ome_zarr(path: Path, data: np.ndarray, version: str, units: str | None) -> None:
    """An OME-Zarr image TCZYX (T=1) with a second, half-resolution level."""
    import zarr

    unit = {"unit": units} if units else {}
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", **unit} for n in "zyx"]
    multiscales = [{"version": version, "axes": axes, "datasets": [
        {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2.0, 0.4, 0.4]}]},
        {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2.0, 0.8, 0.8]}]}]}]
    group = zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)
    group.create_array("s0", data=data[np.newaxis])
    group.create_array("s1", data=data[np.newaxis, :, :, ::2, ::2])
    if version == "0.5":
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    else:
        group.attrs["multiscales"] = multiscales


@pytest.mark.parametrize("version,units,factor", [("0.4", "micrometer", 1.0), ("0.4", "nanometer", 1e-3),
                                                  ("0.5", "micrometer", 1.0)])
def test_ome_zarr_level0_axes_and_spacing(tmp_path, czyx, version, units, factor):
    path = tmp_path / "image.ome.zarr"
    _ome_zarr(path, czyx, version, units)
    volume = read_volume(path)
    assert volume.axes == "CZYX" and volume.data.shape == czyx.shape  # T=1 dropped, level 0
    assert volume.spacing == pytest.approx((2.0 * factor, 0.4 * factor, 0.4 * factor))
    np.testing.assert_array_equal(volume.read_czyx(1, 4), czyx[:, 1:4])


def test_zarr_group_without_multiscales(tmp_path, zyx, one_line):
    import zarr

    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", data=zyx)
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "g.zarr")
    assert "g.zarr/raw" in one_line(err)
    assert read_volume(tmp_path / "g.zarr" / "raw").axes == "ZYX"


# -- errors ------------------------------------------------------------------------------------------


def test_missing_path(tmp_path, one_line):
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "nope.tif")
    assert one_line(err) == f"no such file: {tmp_path / 'nope.tif'}; check the path"


def test_folder_that_is_not_zarr(tmp_path, one_line):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "stuff")
    assert "not a zarr store" in one_line(err)


def test_empty_zarr_folder_named_zarr(tmp_path, one_line):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "empty.zarr")
    assert "not a readable zarr" in one_line(err) and err.value.__cause__ is not None


def test_not_a_tiff(tmp_path, one_line):
    path = tmp_path / "fake.tif"
    path.write_bytes(b"%PDF-1.4 this is not an image\n" * 10)
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert "not a readable TIFF" in one_line(err) and err.value.__cause__ is not None


def test_not_an_npy(tmp_path, one_line):
    path = tmp_path / "fake.npy"
    path.write_text("hello")
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert "npy" in one_line(err) and err.value.__cause__ is not None


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_zero_size_array(tmp_path, suffix, one_line):
    path = tmp_path / f"empty{suffix}"
    if suffix == ".npy":
        np.save(path, np.zeros((0, 8, 8), np.uint8))
    else:
        import zarr

        zarr.create_array(str(path), shape=(4, 0, 8), dtype=np.uint8)
    with pytest.raises(InputError) as err:
        read_volume(path)
    assert "empty" in one_line(err)


def test_unsupported_extension(tmp_path, one_line):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError) as err:
        read_volume(path)
    message = one_line(err)
    assert "'.png'" in message and ".tif" in message and ".npy" in message and ".zarr" in message


def _cut(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_truncated_contiguous_imagej_tiff(tmp_path, zyx, one_line):
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, zyx, imagej=True)  # one block of data after the first IFD
    with pytest.raises(InputError) as err:
        read_volume(_cut(full, tmp_path / "cut.tif"))
    assert "truncated" in one_line(err)


def test_truncated_tiff_with_interleaved_pages(tmp_path, zyx, one_line):
    # IFD, data, IFD, data...: cut in half, tifffile alone would see a shorter, valid stack.
    full = tmp_path / "full.tif"
    with tifffile.TiffWriter(full) as tif:
        for plane in zyx:
            tif.write(plane, metadata=None, compression="lzw")
    for fraction in (0.5, 0.93):
        with pytest.raises(InputError) as err:
            read_volume(_cut(full, tmp_path / "cut.tif", fraction))
        assert "truncated" in one_line(err)


def test_lazy_array_closes_and_reads_slices(tmp_path, zyx):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, zyx, compression="zlib")
    volume = read_volume(path)
    data = volume.data
    assert data[..., 0].shape == zyx.shape[:2]
    np.testing.assert_array_equal(np.asarray(data), zyx)
    with data:
        np.testing.assert_array_equal(data[1, 2:4], zyx[1, 2:4])
    with pytest.raises(IndexError):
        data[0, 0, 0, 0]


# -- real data ---------------------------------------------------------------------------------------


def _vessel_rows(shared: Path) -> list[dict]:
    with open(shared / "vesselnn_2pm" / "volumes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_real_vessel_stacks(shared_data):
    rows = _vessel_rows(shared_data)
    assert rows
    for row in rows:
        listed = (float(row["spacing_z_um"]), float(row["spacing_y_um"]), float(row["spacing_x_um"]))
        shape = (int(row["z"]), int(row["y"]), int(row["x"]))
        for kind in ("images", "labels"):
            volume = read_volume(shared_data / "vesselnn_2pm" / kind / f"{row['name']}.tif")
            assert volume.axes == "ZYX" and volume.shape_zyx == shape
            if kind == "images":
                assert volume.dtype == np.dtype(row["dtype"])
            else:
                assert volume.dtype in (np.uint8, np.uint16)
            # These LZW stacks carry only a 72 dpi placeholder resolution: no voxel size.
            if volume.spacing is not None:
                assert volume.spacing == pytest.approx(listed, rel=1e-3)
            plane = volume.read_czyx(shape[0] // 2, shape[0] // 2 + 1)
            assert plane.shape == (1, 1, *shape[1:]) and plane.any()
        override = read_volume(shared_data / "vesselnn_2pm" / "images" / f"{row['name']}.tif", spacing=listed)
        assert override.spacing == listed


def _bytes_read() -> int | None:
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar:")))


def test_real_cellfinder_two_channels_read_by_plane(shared_data):
    path = shared_data / "cellfinder_stpt" / "cellfinder_crop_2ch_CZYX.tif"
    before = _bytes_read()
    volume = read_volume(path)
    plane = volume.read_czyx(12, 13)
    after = _bytes_read()
    assert volume.axes == "CZYX" and volume.data.shape == (2, 30, 510, 667) and volume.dtype == np.uint16
    assert volume.n_channels == 2 and len(volume.channel_names) == 2
    assert volume.spacing == pytest.approx((5.0, 2.0, 2.0))  # from its tifffile JSON description
    assert plane.shape == (2, 1, 510, 667) and plane.any()
    if before is not None:
        # Opening plus one plane of both channels reads 2 of 60 compressed pages, not the file.
        assert after - before < path.stat().st_size / 4
    volume.data.close()


def test_real_tiff_cut_in_half_fails_cleanly(shared_data, tmp_path, one_line):
    sources = [shared_data / "vesselnn_2pm" / "images" / "burgess2014_bbbDisruption.tif",
               shared_data / "cellfinder_stpt" / "cellfinder_crop_2ch_CZYX.tif"]
    for src in sources:
        cut = _cut(src, tmp_path / src.name)
        with pytest.raises(InputError) as err:
            read_volume(cut).read_czyx(0, 1)
        assert "truncated" in one_line(err)


def test_corrupt_compressed_plane_fails_when_read(tmp_path, zyx, one_line):
    path = tmp_path / "corrupt.tif"
    tifffile.imwrite(path, zyx, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[3].dataoffsets[0], tif.pages[3].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = b"\xff" * count
    path.write_bytes(bytes(data))
    volume = read_volume(path)  # the structure is intact
    np.testing.assert_array_equal(volume.read_czyx(0, 3)[0], zyx[:3])
    with pytest.raises(InputError) as err:
        volume.read_czyx(3, 4)
    assert "damaged" in one_line(err) and err.value.__cause__ is not None


def test_malformed_ome_zarr(tmp_path, zyx, one_line):
    import zarr

    group = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w")
    group.create_array("0", data=zyx)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": ["z", "y", "x"]}]  # no datasets
    with pytest.raises(InputError) as err:
        read_volume(tmp_path / "bad.zarr")
    assert "bad.zarr/0" in one_line(err)
