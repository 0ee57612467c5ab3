"""The manifest's optional dropout graph (Monte-Carlo dropout): older manifests load and write back unchanged."""

from __future__ import annotations

import json

import pytest

from tpem_seg.errors import PackageError
from tpem_seg.models import Manifest
from tpem_seg.models.package import verify_files, zoo_packages


def test_a_manifest_without_it_reads_and_writes_back_unchanged():
    data = json.loads((zoo_packages()["tpem-2ch"] / "manifest.json").read_text())
    manifest = Manifest.from_dict(data)
    assert manifest.mc_dropout_file is None
    assert "mc_dropout" not in manifest.to_dict()


def test_round_trip_and_checksum_required(tmp_path):
    data = json.loads((zoo_packages()["tpem-2ch"] / "manifest.json").read_text())
    data["mc_dropout"] = {"file": "model_mc.onnx"}
    manifest = Manifest.from_dict(data)
    assert manifest.mc_dropout_file == "model_mc.onnx"
    assert Manifest.from_dict(manifest.to_dict()).mc_dropout_file == "model_mc.onnx"
    with pytest.raises(PackageError, match="model_mc.onnx"):
        verify_files(tmp_path, manifest)  # listed without a checksum


def test_a_non_string_file_is_refused():
    data = json.loads((zoo_packages()["tpem-2ch"] / "manifest.json").read_text())
    data["mc_dropout"] = {"file": 3}
    with pytest.raises(PackageError, match="dropout graph"):
        Manifest.from_dict(data)
