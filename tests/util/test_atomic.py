"""Atomic outputs: the final name shows the old content or the new one, never a half-written one."""

import os
import stat

import pytest

from tpem_seg.util import atomic


def test_write_text_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.md"
    atomic.write_text(path, "old")
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(path.parent) == ["report.md"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(path) as temp:
            temp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["model.pt"]


def test_a_folder_replaces_the_old_folder_whole(tmp_path):
    final = tmp_path / "pkg.tpem"
    final.mkdir()
    (final / "stale.onnx").write_text("x")
    with atomic.atomic_path(final, folder=True) as temp:
        (temp / "model.onnx").write_text("y")
    assert sorted(os.listdir(final)) == ["model.onnx"] and os.listdir(tmp_path) == ["pkg.tpem"]


def test_temporaries_honour_the_umask_not_mkstemp_private_modes(tmp_path):
    previous = os.umask(0o022)
    try:
        file_mode = stat.S_IMODE(atomic.temp_path(tmp_path / "a.tif").stat().st_mode)
        folder_mode = stat.S_IMODE(atomic.temp_path(tmp_path / "b.zarr", folder=True).stat().st_mode)
    finally:
        os.umask(previous)
    assert (file_mode, folder_mode) == (0o644, 0o755)
