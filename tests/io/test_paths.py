"""check_outputs: no output may overwrite, enter or contain an input, however it is spelled."""

from __future__ import annotations

import os

import pytest

from tpem_seg.errors import OutputError
from tpem_seg.io.paths import check_outputs


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "raw.tif"
    path.write_bytes(b"raw data")
    return path


def test_distinct_outputs_pass(raw, tmp_path):
    check_outputs([raw], [tmp_path / "labels.tif"])
    check_outputs([raw, tmp_path / "b.tif"], [tmp_path / "out" / "raw_labels.tif", tmp_path / "out" / "b_labels.tif"])


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink", "relative"])
def test_output_that_is_the_input(raw, tmp_path, spelling, monkeypatch):
    (tmp_path / "sub").mkdir()
    if spelling == "same":
        out = raw
    elif spelling == "dotdot":
        out = tmp_path / "sub" / ".." / "raw.tif"
    elif spelling == "symlink":
        out = tmp_path / "link.tif"
        os.symlink(raw, out)
    elif spelling == "hardlink":
        out = tmp_path / "hard.tif"
        os.link(raw, out)
    else:
        monkeypatch.chdir(tmp_path / "sub")
        out = type(raw)("../raw.tif")
    with pytest.raises(OutputError, match="is the input"):
        check_outputs([raw], [out])


def test_symlinked_folder_on_the_output_side(raw, tmp_path):
    os.symlink(tmp_path, tmp_path / "alias")
    with pytest.raises(OutputError, match="is the input"):
        check_outputs([raw], [tmp_path / "alias" / "raw.tif"])


def test_output_inside_an_input_folder_and_around_it(tmp_path):
    store = tmp_path / "raw.zarr"
    store.mkdir()
    with pytest.raises(OutputError, match="inside the input"):
        check_outputs([store], [store / "0" / "labels.tif"])
    with pytest.raises(OutputError, match="replace a folder holding the input"):
        check_outputs([store / "0"], [store])


def test_one_input_overwritten_by_another_inputs_output(raw, tmp_path):
    other = tmp_path / "raw_labels.tif"
    other.write_bytes(b"second input")
    with pytest.raises(OutputError, match="is the input"):
        check_outputs([raw, other], [tmp_path / "raw_labels.tif", tmp_path / "raw_labels_labels.tif"])


def test_two_inputs_one_output(tmp_path):
    a, b = tmp_path / "a" / "x.tif", tmp_path / "b" / "x.tif"
    with pytest.raises(OutputError, match="would both be written"):
        check_outputs([a, b], [tmp_path / "x_labels.tif", tmp_path / "." / "x_labels.tif"])
