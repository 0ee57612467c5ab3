"""Every failure benchmarks/fuzz_readers.py found, kept: each input now reads or is refused with the
project's own error, and is left as it was.

Cases live in tests/io/fuzz_cases/, named by what they exercise:
``*.npy`` (a whole file), ``*.zattrs`` (the attributes of an otherwise valid OME-Zarr image),
``*.zarray`` (the metadata of an otherwise valid zarr array),
``*.manifest.json`` (the manifest of an otherwise valid package with placeholder model bytes).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from tpem_seg.errors import TpemSegError
from tpem_seg.io import read_volume, write_volume
from tpem_seg.models import Manifest, get_config, open_package, write_package

CASES = sorted((Path(__file__).parent / "fuzz_cases").iterdir())


def _place(case: Path, folder: Path) -> tuple[Path, Path]:
    """The case installed where it belongs: (what to open, the file holding the case's bytes)."""
    if case.name.endswith(".manifest.json"):
        manifest = Manifest(name="fuzz", config=get_config("unetr-test", in_channels=1, out_channels=2),
                            channels=["c"], classes=["bg", "fg"])
        package = write_package(folder / "p.tpem", manifest, {"model.onnx": b"placeholder"}).path
        shutil.copyfile(case, package / "manifest.json")
        return package, package / "manifest.json"
    if case.suffix == ".zattrs":
        image = write_volume(folder / "image.zarr", np.ones((3, 16, 16), np.uint8), "ZYX")
        shutil.copyfile(case, image / ".zattrs")
        return image, image / ".zattrs"
    if case.suffix == ".zarray":
        import zarr

        array = zarr.open_array(str(folder / "array.zarr"), mode="w", shape=(3, 16, 16), chunks=(1, 16, 16),
                                dtype="u1", zarr_format=2)
        array[:] = 7
        shutil.copyfile(case, folder / "array.zarr" / ".zarray")
        return folder / "array.zarr", folder / "array.zarr" / ".zarray"
    path = folder / f"case{case.suffix}"
    shutil.copyfile(case, path)
    return path, path


def _open(path: Path) -> None:
    if path.suffix == ".tpem":
        open_package(path)
        return
    volume = read_volume(path)
    volume.read_czyx(0, 1)
    if volume.data.nbytes <= 64 * 2**20:  # as the fuzzer does: a regression fails here, it does not swap
        volume.read_czyx()
    volume.data.close()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_fuzz_case_reads_or_is_refused_cleanly(case, tmp_path):
    target, holder = _place(case, tmp_path)
    before = hashlib.sha256(holder.read_bytes()).hexdigest()
    try:
        _open(target)
    except TpemSegError as err:
        assert str(err) and "\n" not in str(err)
    assert hashlib.sha256(holder.read_bytes()).hexdigest() == before


def test_there_are_cases():
    assert len(CASES) >= 5
