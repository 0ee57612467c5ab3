"""Text properties stored with a written volume, in each format's own place."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from tpem_seg.io import open_writer, read_volume

PROPS = {"what": "entropy of the mean", "passes": "20"}


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".zarr"])
def test_properties_are_stored(tmp_path, suffix):
    path = tmp_path / f"map{suffix}"
    with open_writer(path, (3, 8, 8), np.float32, "ZYX", spacing=(5.0, 1.0, 1.0), properties=PROPS) as writer:
        writer.write(np.full((3, 8, 8), 0.5, np.float32))
    assert read_volume(path).spacing == pytest.approx((5.0, 1.0, 1.0))
    if suffix == ".tif":
        stored = tifffile.TiffFile(path).imagej_metadata["Properties"]
    elif suffix == ".npy":
        stored = json.loads((tmp_path / "map.npy.json").read_text())["properties"]
    else:
        import zarr

        stored = dict(zarr.open_group(str(path), mode="r").attrs)["properties"]
    assert stored == PROPS


def test_label_names_and_properties_together(tmp_path):
    path = tmp_path / "labels.tif"
    with open_writer(path, (2, 8, 8), np.uint8, "ZYX", label_names=["background", "vessel"],
                     properties=PROPS) as writer:
        writer.write(np.zeros((2, 8, 8), np.uint8))
    stored = tifffile.TiffFile(path).imagej_metadata["Properties"]
    assert stored["what"] == PROPS["what"] and json.loads(stored["label_names"]) == ["background", "vessel"]
