"""The command line as a user meets it: real stacks in, labels out; bad input, one line and exit 2."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tpem_seg import read_volume, write_volume
from tpem_seg.cli import main

#: ../shared/data beside the project (the real stacks); tests that need it skip when absent.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

VESSELS = SHARED_DATA / "vesselnn_2pm"
CELLFINDER = SHARED_DATA / "cellfinder_stpt" / "cellfinder_crop_2ch_CZYX.tif"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (real volumes) is absent")


def run_cli(*args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def vessel_rows():
    if not VESSELS.is_dir():
        return []
    with open(VESSELS / "volumes.csv") as f:
        return list(csv.DictReader(f))


@needs_shared
@pytest.mark.parametrize("row", vessel_rows(), ids=lambda r: r["name"])
def test_real_vessel_stacks(package_1ch, tmp_path, row):
    spacing = ",".join(row[f"spacing_{a}_um"] for a in "zyx")
    out = tmp_path / "labels.tif"
    assert run_cli("run", VESSELS / "images" / f"{row['name']}.tif", "-o", out, "--model", package_1ch.path,
                   "--backend", "onnxruntime", "--spacing", spacing, "--no-progress") == 0
    labels = read_volume(out)
    assert labels.shape_zyx == (int(row["z"]), int(row["y"]), int(row["x"]))
    assert labels.dtype == np.uint8
    assert labels.spacing == pytest.approx(tuple(float(row[f"spacing_{a}_um"]) for a in "zyx"), rel=1e-4)


@needs_shared
def test_real_two_channel_stack(package_2ch, tmp_path):
    out = tmp_path / "labels.tif"
    assert run_cli("run", CELLFINDER, "-o", out, "--model", package_2ch.path, "--channels", "0,1",
                   "--backend", "onnxruntime", "--no-progress") == 0
    labels = read_volume(out)
    assert labels.shape_zyx == (30, 510, 667)
    assert labels.spacing == pytest.approx((5.0, 2.0, 2.0), rel=1e-4)


def test_several_inputs_into_a_folder_with_probabilities(package_2ch, tmp_path):
    for i in range(2):
        write_volume(tmp_path / f"v{i}.tif", np.random.default_rng(i).random((2, 12, 30, 30), np.float32), "CZYX")
    (tmp_path / "out").mkdir()
    assert run_cli("run", tmp_path / "v0.tif", tmp_path / "v1.tif", "-o", tmp_path / "out", "--model",
                   package_2ch.path, "--probabilities", "--no-progress") == 0
    for i in range(2):
        probs = read_volume(tmp_path / "out" / f"v{i}_probabilities.tif")
        # float16 probabilities are stored as a float32 ImageJ hyperstack (ImageJ holds no float16)
        assert probs.n_channels == 3 and probs.shape_zyx == (12, 30, 30) and probs.dtype == np.float32


def test_info_and_models(capsys, package_2ch):
    assert run_cli("info") == 0
    assert "backend onnxruntime on cpu: available" in capsys.readouterr().out
    assert run_cli("models", package_2ch.path) == 0
    out = capsys.readouterr().out
    assert "unetr-b16" in out and "ch0, ch1 -> background, vessel, neuron" in out


# -- bad input: exit 2, one line naming the problem, no output left -------------------------------


def _tiff(tmp_path, shape=(2, 12, 30, 30), dtype=np.uint16, name="in.tif"):
    path = tmp_path / name
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 100, shape).astype(dtype),
                     metadata={"axes": "CZYX"[-len(shape):]})
    return path


def _truncated(tmp_path):
    src = _tiff(tmp_path, shape=(2, 12, 64, 64), name="whole.tif")
    data = src.read_bytes()
    path = tmp_path / "in.tif"
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_tiff(tmp_path):
    path = tmp_path / "in.tif"
    path.write_text("this is not an image\n")
    return path


def _npy(tmp_path, array):
    path = tmp_path / "in.npy"
    np.save(path, array)
    return path


BAD_INPUTS = {
    "missing path": (lambda t: t / "nope.tif", [], "no such file"),
    "truncated tiff": (_truncated, [], "truncated"),
    "not a tiff": (_not_tiff, [], "TIFF"),
    "wrong channel count": (lambda t: _tiff(t, shape=(3, 12, 30, 30)), [], "--channels"),
    "ambiguous 4D": (lambda t: _npy(t, np.zeros((2, 12, 30, 30), np.float32)), [], "--axes"),
    "NaN": (lambda t: _npy(t, np.full((2, 12, 30, 30), np.nan, np.float32)), ["--axes", "CZYX"], "NaN"),
    "Inf": (lambda t: _npy(t, np.where(np.eye(30, dtype=bool), np.inf, 1)[None, None].repeat(2, 0).repeat(
        12, 1).astype(np.float32)), ["--axes", "CZYX"], "Inf"),
    "empty": (lambda t: _npy(t, np.zeros((2, 0, 30, 30), np.float32)), ["--axes", "CZYX"], "empty"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, package_2ch, tmp_path, capsys):
    make, extra, message = BAD_INPUTS[case]
    src = make(tmp_path)
    out = tmp_path / "out" / "labels.tif"
    out.parent.mkdir()
    code = run_cli("run", src, "-o", out, "--model", package_2ch.path, "--no-progress", *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and message.lower() in err.lower(), err
    assert "Traceback" not in err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("damage", ["manifest", "checksum", "missing onnx"])
def test_broken_package_exits_2(damage, package_2ch, tmp_path, capsys):
    import shutil

    package = tmp_path / "broken.tpem"
    shutil.copytree(package_2ch.path, package)
    if damage == "manifest":
        (package / "manifest.json").write_text("{not json")
    elif damage == "checksum":
        onnx = package / "model.onnx"
        data = bytearray(onnx.read_bytes())
        data[len(data) // 2] ^= 0xFF
        onnx.write_bytes(bytes(data))
    else:
        (package / "model.onnx").unlink()
    src = _tiff(tmp_path)
    code = run_cli("run", src, "-o", tmp_path / "labels.tif", "--model", package, "--no-progress")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "re-export" in err, err
    assert not (tmp_path / "labels.tif").exists()


@pytest.mark.parametrize("where", ["missing folder", "folder is a file"])
def test_unwritable_output_exits_2(where, package_2ch, tmp_path, capsys):
    src = _tiff(tmp_path)
    if where == "missing folder":
        out = tmp_path / "no" / "such" / "labels.tif"
    else:
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "labels.tif"
    code = run_cli("run", src, "-o", out, "--model", package_2ch.path, "--no-progress")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err


def test_interrupt_leaves_no_output(package_2ch, tmp_path, monkeypatch):
    from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend

    calls = {"n": 0}
    real = OnnxRuntimeBackend._infer

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", interrupted)
    src = _tiff(tmp_path, shape=(2, 40, 64, 64))
    (tmp_path / "out").mkdir()
    code = run_cli("run", src, "-o", tmp_path / "out" / "labels.tif", "--model", package_2ch.path,
                   "--backend", "onnxruntime", "--no-progress")
    assert code != 0 and calls["n"] == 3
    assert list((tmp_path / "out").iterdir()) == []


def test_internal_failure_is_not_exit_2(package_2ch, tmp_path, monkeypatch):
    from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend

    def broken(self, batch):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", broken)
    with pytest.raises(RuntimeError, match="simulated bug"):  # the console script exits 1 with the traceback
        main(["run", str(_tiff(tmp_path)), "-o", str(tmp_path / "l.tif"), "--model", str(package_2ch.path),
              "--backend", "onnxruntime", "--no-progress"])
    assert not (tmp_path / "l.tif").exists()


def test_manifest_records_what_the_runtime_needs(package_2ch):
    manifest = json.loads((package_2ch.path / "manifest.json").read_text())
    for key in ("name", "version", "config", "input", "output", "onnx", "files", "provenance"):
        assert key in manifest
    assert set(manifest["files"]) >= {"model.onnx"}
