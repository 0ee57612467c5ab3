"""tpem-seg convert: a TIFF (ImageJ hyperstack, ZCYX pages) into OME-Zarr, value for value, with its voxel size."""

import numpy as np

from tpem_seg import read_volume, write_volume


def test_convert_round_trip_equals_the_tiff(tmp_path, cli, rng):
    data = rng.integers(0, 60000, (2, 9, 33, 47), dtype=np.uint16)
    write_volume(tmp_path / "in.tif", data, "CZYX", spacing=(5.0, 0.8, 0.8))
    result = cli(["convert", str(tmp_path / "in.tif"), str(tmp_path / "out.zarr")])
    assert result.exit_code == 0, result.stderr
    tiff, converted = read_volume(tmp_path / "in.tif"), read_volume(tmp_path / "out.zarr")
    assert converted.axes == "CZYX" and converted.spacing == tiff.spacing == (5.0, 0.8, 0.8)
    assert tiff.axes == "ZCYX"  # the TIFF's pages; the zarr is written channel-first
    np.testing.assert_array_equal(np.asarray(converted.data), np.moveaxis(np.asarray(tiff.data), 1, 0))
    np.testing.assert_array_equal(np.asarray(converted.data), data)
