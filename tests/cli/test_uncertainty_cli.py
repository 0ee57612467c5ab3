"""``tpem-seg run --uncertainty``: the map beside the labels, which method made it, and refused values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from tpem_seg.io import read_volume, write_volume


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "raw.tif"
    write_volume(path, np.random.default_rng(0).integers(0, 255, (16, 40, 40), np.uint8), "ZYX",
                 spacing=(5.0, 1.0, 1.0))
    return path


def test_flip_fallback_map_is_written_and_reported(cli, package_1ch, stack, tmp_path):
    out, spread, record = tmp_path / "labels.tif", tmp_path / "u.tif", tmp_path / "runs.jsonl"
    result = cli(["run", str(stack), "-o", str(out), "--model", str(package_1ch.path), "--backend", "onnxruntime",
                  "--no-progress", "--uncertainty", str(spread), "--json", str(record)])
    assert result.exit_code == 0, result.stderr
    assert "uncertainty by flips (8 passes)" in result.stderr
    written = read_volume(spread)
    assert written.shape_zyx == (16, 40, 40) and np.asarray(written.data).dtype == np.float32
    assert written.spacing == pytest.approx((5.0, 1.0, 1.0))
    assert tifffile.TiffFile(spread).imagej_metadata["Properties"]["tpem_seg_uncertainty_method"] == "flips"
    entry = json.loads(record.read_text())
    assert entry["uncertainty"]["output"] == str(spread) and entry["uncertainty"]["method"] == "flips"


def test_uncertainty_into_a_folder(cli, package_1ch, stack, tmp_path):
    folder = tmp_path / "maps"
    folder.mkdir()
    result = cli(["run", str(stack), "-o", str(tmp_path / "labels.tif"), "--model", str(package_1ch.path),
                  "--backend", "onnxruntime", "--no-progress", "--uncertainty", str(folder)])
    assert result.exit_code == 0, result.stderr
    assert (folder / "raw_uncertainty.tif").is_file()


@pytest.mark.parametrize("argv, word", [(["--mc-passes", "0"], "mc-passes"),
                                        (["--uncertainty", "{out}"], "written"),
                                        (["--cluster", "local:1"], "--cluster")],
                         ids=["mc-passes 0", "same path", "on a cluster"])
def test_refused(cli, package_1ch, stack, tmp_path, argv, word):
    out = tmp_path / "labels.tif"
    listing = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(out=out) for a in argv]
    result = cli(["run", str(stack), "-o", str(out), "--model", str(package_1ch.path), "--backend", "onnxruntime",
                  "--no-progress", "--uncertainty", str(tmp_path / "u.tif"), *argv])
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
