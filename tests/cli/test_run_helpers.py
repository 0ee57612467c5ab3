"""CLI conventions: --version, completion, folders and globs, --skip-existing, --name-template, --json,
the unknown-voxel-size warning, progress bars only on a terminal."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest

from tpem_seg.cli.run_helpers import expand_inputs, output_paths, stem
from tpem_seg.errors import InputError, OutputError
from tpem_seg.io import read_volume, write_volume

SPACING = (5.0, 1.0, 1.0)


@pytest.fixture
def stacks(tmp_path):
    """Two small two-channel stacks in ``in/`` (one with a voxel size, one without) and an ``out/`` folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    (tmp_path / "out").mkdir()
    for i in range(2):
        data = np.random.default_rng(i).random((2, 12, 30, 30), np.float32)
        write_volume(folder / f"v{i}.tif", data, "CZYX", spacing=SPACING if i == 0 else None)
    (folder / "notes.txt").write_text("not a volume")
    return folder, tmp_path / "out"


def _run(cli, package, *args):
    return cli(["run", *map(str, args), "--model", str(package.path)])


def test_version_names_the_backends(cli):
    result = cli(["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("tpem-seg ") and "onnxruntime" in result.stdout


def test_shell_completion_script(cli, monkeypatch):
    # Typer otherwise detects the shell from the parent processes and ignores the argument.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = cli(["--show-completion", "bash"])
    assert result.exit_code == 0 and "complete" in result.stdout


def test_folder_and_glob_inputs(cli, package_2ch, stacks):
    folder, out = stacks
    assert expand_inputs([folder]) == [folder / "v0.tif", folder / "v1.tif"]  # notes.txt is no volume
    assert expand_inputs([str(folder / "v*.tif"), folder / "v0.tif"]) == [folder / "v0.tif", folder / "v1.tif"]
    result = _run(cli, package_2ch, folder, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["v0_labels.tif", "v1_labels.tif"]
    missing = _run(cli, package_2ch, str(folder / "w*.tif"), "-o", out)
    assert missing.exit_code == 2 and "matches no file" in missing.stderr


def test_skip_existing_leaves_outputs_alone(cli, package_2ch, stacks):
    folder, out = stacks
    (out / "v0_labels.tif").write_bytes(b"mine")
    result = _run(cli, package_2ch, folder, "-o", out, "--skip-existing")
    assert result.exit_code == 0 and "v0_labels.tif: exists, skipped" in result.stderr
    assert (out / "v0_labels.tif").read_bytes() == b"mine"
    assert read_volume(out / "v1_labels.tif").shape_zyx == (12, 30, 30)


def test_name_template(cli, package_2ch, stacks):
    folder, out = stacks
    result = _run(cli, package_2ch, folder, "-o", out, "--name-template", "{name}_seg.zarr")
    assert result.exit_code == 0, result.stderr
    assert read_volume(out / "v0_seg.zarr").spacing == pytest.approx(SPACING)
    clash = _run(cli, package_2ch, folder, "-o", out, "--name-template", "same.tif")
    assert clash.exit_code == 2 and "{name}" in clash.stderr
    with pytest.raises(OutputError, match="not valid"):
        output_paths([folder / "a.tif", folder / "b.tif"], out, False, "{name}_{oops}.tif")


def test_json_records(cli, package_2ch, stacks):
    folder, out = stacks
    result = _run(cli, package_2ch, folder, "-o", out, "--json", "-")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["output"] for r in records] == [str(out / "v0_labels.tif"), str(out / "v1_labels.tif")]
    sha = hashlib.sha256((package_2ch.path / "manifest.json").read_bytes()).hexdigest()
    for record in records:
        assert record["model_sha256"] == sha and record["backend"] and record["device"] == "cpu"
        assert record["shape"] == [12, 30, 30] and record["tiles"] >= 1 and record["voxels_per_second"] > 0
    assert records[0]["voxel_size_in_um"] == list(SPACING) and records[1]["voxel_size_in_um"] is None
    path = out / "runs.jsonl"
    assert _run(cli, package_2ch, folder / "v0.tif", "-o", out / "x.tif", "--json", path).exit_code == 0
    assert json.loads(path.read_text())["input"] == str(folder / "v0.tif")


def test_unknown_voxel_size_is_a_warning(cli, package_1ch, tmp_path, caplog):
    write_volume(tmp_path / "v.tif", np.random.default_rng(0).random((12, 30, 30), np.float32), "ZYX")
    with caplog.at_level(logging.WARNING, logger="tpem_seg.runtime.segmenter"):
        assert _run(cli, package_1ch, tmp_path / "v.tif", "-o", tmp_path / "l.tif").exit_code == 0
    assert any(r.levelno == logging.WARNING and "voxel size unknown" in r.getMessage() for r in caplog.records)


def test_progress_bars_only_on_a_terminal(cli, package_2ch, stacks):
    folder, out = stacks
    quiet = _run(cli, package_2ch, folder / "v0.tif", "-o", out / "a.tif")  # stderr is no terminal here
    forced = _run(cli, package_2ch, folder / "v0.tif", "-o", out / "b.tif", "--progress")
    assert "tile/s" not in quiet.stderr and "tile" in forced.stderr and "segment" in forced.stderr


def test_input_helpers_refuse_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no volumes"):
        expand_inputs([tmp_path / "empty"])
    assert stem(tmp_path / "a.ome.tif") == "a" and stem(tmp_path / "b.zarr") == "b"
