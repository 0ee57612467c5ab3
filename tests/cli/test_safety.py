"""``tpem-seg run`` against mistakes and faults: exit 2 (or 128 + signal), one line, no traceback, no
output file and no temporary file, and every input byte for byte as it was (sha256 before and after)."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tpem_seg.io import writers

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--model", "vessels-2p", "--backend", "onnxruntime", "--no-progress"]  # bundled, 1 channel, no torch


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stack(tmp_path) -> Path:
    path = tmp_path / "raw.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (16, 64, 64), np.uint8))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or p.name.endswith(".lock"))


def refused(cli, argv, inputs, folder: Path, code: int = 2) -> str:
    """Run the CLI, expecting a one-line refusal; inputs unchanged, nothing new left in ``folder``."""
    before = {p: sha(p) for p in inputs}
    listing = sorted(p.name for p in folder.iterdir())
    result = cli([str(a) for a in argv])
    assert result.exit_code == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert {p: sha(p) for p in inputs} == before
    assert sorted(p.name for p in folder.iterdir()) == listing
    return lines[0]


# -- outputs that would destroy inputs ---------------------------------------------------------------


def test_output_equal_to_the_input(cli, stack, tmp_path):
    assert "is the input" in refused(cli, ["run", stack, "-o", stack, *MODEL], [stack], tmp_path)


def test_output_equal_to_the_input_through_dotdot_and_a_symlink(cli, stack, tmp_path):
    (tmp_path / "sub").mkdir()
    dotted = tmp_path / "sub" / ".." / stack.name
    assert "is the input" in refused(cli, ["run", stack, "-o", dotted, *MODEL], [stack], tmp_path)
    link = tmp_path / "link.tif"
    os.symlink(stack, link)
    assert "is the input" in refused(cli, ["run", link, "-o", stack, *MODEL], [stack], tmp_path)
    assert "is the input" in refused(cli, ["run", stack, "-o", link, *MODEL], [stack], tmp_path)


def test_output_hard_linked_to_the_input(cli, stack, tmp_path):
    hard = tmp_path / "hard.tif"
    os.link(stack, hard)
    assert "is the input" in refused(cli, ["run", stack, "-o", hard, *MODEL], [stack], tmp_path)


def test_folder_output_onto_an_input(cli, stack, tmp_path):
    # With two inputs, -o FOLDER writes FOLDER/STEM_labels.tif: here, the second input.
    other = tmp_path / "raw_labels.tif"
    tifffile.imwrite(other, np.ones((16, 64, 64), np.uint8))
    message = refused(cli, ["run", stack, other, "-o", tmp_path, *MODEL], [stack, other], tmp_path)
    assert "is the input" in message and "raw_labels.tif" in message


def test_two_inputs_onto_one_output(cli, stack, tmp_path):
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / "raw.tif"
    twin.write_bytes(stack.read_bytes())
    (tmp_path / "out").mkdir()
    message = refused(cli, ["run", stack, twin, "-o", tmp_path / "out", *MODEL], [stack, twin], tmp_path)
    assert "several inputs would write" in message


def test_output_inside_an_input_zarr(cli, tmp_path):
    from tpem_seg.io import write_volume

    store = write_volume(tmp_path / "raw.zarr", np.ones((16, 64, 64), np.uint8), "ZYX")
    inner = store / "labels.tif"
    before = sorted(p.name for p in store.rglob("*"))
    result = cli(["run", str(store), "-o", str(inner), *MODEL])
    assert result.exit_code == 2 and "inside the input" in result.stderr
    assert sorted(p.name for p in store.rglob("*")) == before


# -- hostile inputs, end to end ------------------------------------------------------------------------


def _shapes_tiff(path: Path) -> None:
    with tifffile.TiffWriter(path) as tif:
        for _ in range(3):
            tif.write(np.ones((64, 64), np.uint8), metadata=None)
        tif.write(np.ones((32, 32), np.uint8), metadata=None)


def _bomb_tiff(path: Path) -> None:
    tifffile.imwrite(path, np.ones((3, 32, 32), np.uint8), compression="zlib", metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for page in tif.pages:
            page.tags["ImageWidth"].overwrite(2**31 - 1)
            page.tags["ImageLength"].overwrite(2**20)


@pytest.mark.parametrize("make, name, word", [
    (_shapes_tiff, "shapes.tif", "separate images"),
    (lambda p: p.touch(), "empty.tif", "not a readable TIFF"),
    (lambda p: np.save(p, np.array([None, {}], dtype=object), allow_pickle=True), "objects.npy", "Python objects"),
    (lambda p: np.save(p, np.zeros((16, 64, 64), np.complex64)), "complex.npy", "complex"),
    (_bomb_tiff, "bomb.tif", "declares a page of"),
], ids=["page-shapes", "zero-bytes", "npy-objects", "complex", "bomb"])
def test_hostile_input_end_to_end(cli, tmp_path, make, name, word):
    src = tmp_path / name
    make(src)
    out = tmp_path / "labels.tif"
    assert word in refused(cli, ["run", src, "-o", out, *MODEL], [src], tmp_path)


def test_folder_named_like_a_tiff(cli, tmp_path):
    src = tmp_path / "stack.tif"
    src.mkdir()
    assert "holds no volumes" in refused(cli, ["run", src, "-o", tmp_path / "labels.tif", *MODEL], [], tmp_path)


# -- options out of range ----------------------------------------------------------------------------


@pytest.mark.parametrize("option, word", [
    (["--overlap", "1"], "overlap"), (["--overlap", "-0.1"], "overlap"), (["--overlap", "nan"], "overlap"),
    (["--spacing", "0,1,1"], "voxel size"), (["--spacing", "5,-1,1"], "voxel size"),
    (["--channels", "1"], "channel"), (["--channels", "0,0"], "distinct"), (["--channels", "-1"], "distinct"),
    (["--batch-size", "0"], "batch size"),
    (["--pyramid", "2"], "name the output .zarr"), (["--pyramid", "0"], "--pyramid"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_options_out_of_range(cli, stack, tmp_path, option, word):
    out = tmp_path / "labels.tif"
    assert word in refused(cli, ["run", stack, "-o", out, *MODEL, *option], [stack], tmp_path)


# -- a full disk -------------------------------------------------------------------------------------


def test_full_disk_is_checked_before_the_run(cli, stack, tmp_path, monkeypatch):
    monkeypatch.setattr("tpem_seg.io.space.free_bytes", lambda folder: 1000)
    message = refused(cli, ["run", stack, "-o", tmp_path / "labels.tif", *MODEL], [stack], tmp_path)
    assert "needs about 0.1 MB" in message  # 64 kB of labels + 64 kB margin and "0.0 MB free" in message


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_disk_filling_during_the_write(cli, stack, tmp_path, monkeypatch, suffix):
    # The free-space check passes (a compressed zarr is not checked), then the OS says ENOSPC.
    def full(self, slab, z0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writers.TiffVolumeWriter, "_write_slab", full)
    monkeypatch.setattr(writers.ZarrVolumeWriter, "_write_slab", full)
    out = tmp_path / f"labels{suffix}"
    message = refused(cli, ["run", stack, "-o", out, *MODEL], [stack], tmp_path)
    assert "disk filled" in message and "needs about" in message and "partial file removed" in message


# -- signals -----------------------------------------------------------------------------------------


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tpem_seg.cli", "run", *args, *MODEL], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_partial(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(".partial-" in p.name for p in folder.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no partial output appeared"
        time.sleep(0.01)


@pytest.fixture
def long_stack(tmp_path) -> Path:
    """Large enough that a run lasts well past the moment its output file is opened."""
    path = tmp_path / "long.tif"
    tifffile.imwrite(path, np.random.default_rng(1).integers(0, 255, (96, 256, 256), np.uint8))
    return path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signals_remove_the_partial_output(long_stack, tmp_path, signum):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = sha(long_stack)
    proc = _start([str(long_stack), "-o", str(out_dir / "labels.tif")], tmp_path)
    _wait_for_partial(proc, out_dir)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines()[-1] == f"error: stopped by {signum.name}; partial output removed"
    assert "Traceback" not in stderr
    assert list(out_dir.iterdir()) == []
    assert sha(long_stack) == before


def test_after_sigkill_the_next_run_cleans_the_temporary_name(long_stack, stack, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "labels.tif"
    proc = _start([str(long_stack), "-o", str(out)], tmp_path)
    _wait_for_partial(proc, out_dir)
    proc.kill()
    proc.communicate(timeout=60)
    left = [p.name for p in out_dir.iterdir()]
    assert all(name.startswith(".labels.tif.") for name in left) and any(".partial-" in n for n in left)
    assert not out.exists()
    rerun = _start([str(stack), "-o", str(out)], tmp_path)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert [p.name for p in out_dir.iterdir()] == ["labels.tif"]
    assert tifffile.imread(out).shape == (16, 64, 64)
