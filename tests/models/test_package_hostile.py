"""Hostile and damaged model packages: refused with one PackageError line, the package left as it was.

The packages here hold placeholder bytes for ``model.onnx``: opening a package verifies the files
against the manifest and never runs the network, so no torch or ONNX is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from digests import tree_digest
from tpem_seg.errors import PackageError
from tpem_seg.models import Manifest, get_config, open_package, write_package
from tpem_seg.models.package import DIGEST_KEY, MANIFEST, MAX_MANIFEST_BYTES, manifest_digest


@pytest.fixture
def package(tmp_path) -> Path:
    config = get_config("unetr-test", in_channels=1, out_channels=2)
    manifest = Manifest(name="p", config=config, channels=["ch0"], classes=["background", "vessel"])
    write_package(tmp_path / "p.tpem", manifest, {"model.onnx": b"onnx bytes", "extra/notes.txt": b"hello"})
    return tmp_path / "p.tpem"


def _rewrite(package: Path, edit) -> None:
    """Edit the manifest's JSON object and re-sign it, as a hostile exporter would."""
    data = json.loads((package / MANIFEST).read_text())
    edit(data)
    data[DIGEST_KEY] = manifest_digest(data)
    (package / MANIFEST).write_text(json.dumps(data))


def refused(package: Path) -> str:
    before = tree_digest(package)
    with pytest.raises(PackageError) as err:
        open_package(package)
    assert tree_digest(package) == before
    message = str(err.value)
    assert message and "\n" not in message
    return message


def test_written_package_records_sizes_and_opens(package):
    opened = open_package(package)
    assert opened.manifest.file_sizes == {"model.onnx": 10, "extra/notes.txt": 5}


@pytest.mark.parametrize("rel", ["../outside.bin", "/etc/hostname", "extra/../../outside.bin", "C:\\model.onnx",
                                 ""])
def test_manifest_path_leaving_the_package(package, rel):
    outside = package.parent / "outside.bin"
    outside.write_bytes(b"secret")

    def edit(data):
        data["files"][rel] = hashlib.sha256(b"secret").hexdigest()

    _rewrite(package, edit)
    message = refused(package)
    assert "inside the package" in message or "outside the package" in message
    assert outside.read_bytes() == b"secret"


def test_onnx_file_named_outside(package):
    def edit(data):
        data["onnx"]["file"] = "../model.onnx"
        data["files"]["../model.onnx"] = data["files"].pop("model.onnx")

    _rewrite(package, edit)
    assert "not a plain path inside the package" in refused(package)


@pytest.mark.parametrize("where", ["model.onnx", "extra", "engines/plan.engine"])
def test_package_holding_a_symlink(package, tmp_path, where):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "notes.txt").write_bytes(b"hello")
    (target / "model.onnx").write_bytes(b"onnx bytes")
    link = package / where
    if link.is_dir():
        shutil.rmtree(link)
    elif link.exists():
        link.unlink()
    link.parent.mkdir(exist_ok=True)
    # The same bytes behind the link: checksums alone would pass.
    os.symlink(target if where == "extra" else target / Path(where).name, link)
    assert "is a symlink" in refused(package)


def test_package_folder_itself_may_be_a_link(package, tmp_path):
    link = tmp_path / "linked.tpem"
    os.symlink(package, link)
    assert open_package(link).name == "p"


def test_file_larger_than_the_manifest_says(package):
    with open(package / "model.onnx", "ab") as fh:
        fh.write(b"\0" * 4096)
    assert "is 4106 bytes but the manifest says 10" in refused(package)


def test_manifest_too_large_to_be_one(package):
    with open(package / MANIFEST, "ab") as fh:
        fh.truncate(MAX_MANIFEST_BYTES + 1)
    assert "not a manifest" in refused(package)


def test_manifest_nested_too_deep(package):
    (package / MANIFEST).write_text("[" * 100000 + "]" * 100000)
    assert "not valid JSON" in refused(package)


@pytest.mark.parametrize("edit", [
    lambda d: d.update(files=["model.onnx"]),
    lambda d: d.update(file_sizes={"model.onnx": "ten"}),
    lambda d: d["input"].update(spacing=[1, 0, 1]),
    lambda d: d.update(config=[1, 2]),
    lambda d: d.update(format_version="one"),
], ids=["files-list", "size-text", "zero-spacing", "config-list", "version-text"])
def test_malformed_fields(package, edit):
    _rewrite(package, edit)
    refused(package)
