"""`tpem-seg export` end to end on the CPU: checkpoint -> package -> segmentation, and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

CLASSES = ["background", "vessel", "neuron"]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(0, keepdims=True))
    return e / e.sum(0, keepdims=True)


def test_export_cli_roundtrip_onnxruntime_equals_torch(exported):
    """checkpoint -> `tpem-seg export` -> package; onnxruntime and torch segment a volume alike (1e-4)."""
    from tpem_seg import Segmenter

    path, result = exported
    assert "labels agree" in result.stdout and "(ok)" in result.stdout
    volume = (np.random.default_rng(3).random((2, 24, 44, 40)) * 1000).astype(np.float32)
    logits = {}
    for backend in ("onnxruntime", "torch"):
        with Segmenter(path, backend=backend, device="cpu", output="logits", overlap=0.25) as segmenter:
            logits[backend] = segmenter.segment(volume, axes="CZYX")
    p_ort, p_torch = softmax(logits["onnxruntime"]), softmax(logits["torch"])
    assert p_ort.shape == (3, 24, 44, 40)
    assert np.abs(p_ort - p_torch).max() < 1e-4
    top2 = np.sort(p_torch, axis=0)[-2:]
    assert not ((p_ort.argmax(0) != p_torch.argmax(0)) & (top2[1] - top2[0] > 1e-4)).any()


def test_exported_manifest_has_what_the_runtime_needs(exported, tpem_checkpoint):
    from tpem_seg.models import open_package
    from tpem_seg.models.package import sha256_file

    path, _ = exported
    package = open_package(path)
    m = package.manifest
    assert (m.name, m.version, m.channels, m.classes, m.spacing) == ("test", "1.2.3", ["vessel", "neuron"], CLASSES,
                                                                      (5.0, 0.99, 0.99))
    assert m.onnx_opset >= 17 and m.normalization.mode == "percentile" and m.activation == "softmax"
    assert set(m.files) == {"model.onnx", "model.pt"}
    parity = m.parity["onnxruntime_vs_torch"]
    assert parity["passed"] and parity["max_abs_prob_diff"] < 1e-4 and parity["n_tiles"] == 4
    assert parity["sources"] == {"random": 2, "synthetic": 2} and 0.99 <= parity["label_agreement"] <= 1
    prov = m.provenance
    assert prov["command"].startswith("tpem-seg export ") and "--version 1.2.3" in prov["command"]
    assert prov["source"] == {"file": "finetune.pt", "sha256": sha256_file(tpem_checkpoint),
                              "kind": "tpem-seg checkpoint"}
    assert prov["training"]["command"] == "tpem-seg train finetune (test)"
    assert prov["tpem_seg"] and prov["exporter"]["opset"] == m.onnx_opset
    assert m.metrics == {"dice_vessel": 0.5}
    assert "manifest_sha256" in json.loads((path / "manifest.json").read_text())


def test_exported_onnx_has_dynamic_batch_and_fixed_tile(exported):
    import onnx
    import onnxruntime as ort

    from tpem_seg.export.onnx import check_onnx

    path, _ = exported
    check_onnx(path / "model.onnx", 2, 3, (16, 32, 32))
    model = onnx.load(str(path / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops and "InstanceNormalization" not in ops  # decomposed for accuracy
    assert any("/instance_norm/" in n.name and n.op_type == "ReduceMean" for n in model.graph.node)
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        (out,) = session.run(None, {"input": np.zeros((n, 2, 16, 32, 32), np.float32)})
        assert out.shape == (n, 3, 16, 32, 32)


def _copy(exported, tmp_path):
    path, _ = exported
    return shutil.copytree(path, tmp_path / "copy.tpem")


def test_tampered_onnx_byte_is_refused(exported, tmp_path, cli):
    from tpem_seg.errors import PackageError
    from tpem_seg.models import open_package

    copy = _copy(exported, tmp_path)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match="model.onnx fails its checksum"):
        open_package(copy)
    result = cli(["models", str(copy)])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "re-export" in result.stderr


def test_tampered_manifest_field_is_refused(exported, tmp_path, cli):
    from tpem_seg.errors import PackageError
    from tpem_seg.models import open_package

    copy = _copy(exported, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["input"]["normalization"]["percentiles"] = [0.5, 99.0]
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(PackageError, match="manifest.json was edited after export"):
        open_package(copy)
    result = cli(["models", str(copy)])
    assert result.exit_code == 2 and "edited after export" in result.stderr


def test_reformatted_manifest_still_opens(exported, tmp_path):
    """The digest covers values, not layout: re-indenting the JSON is not tampering."""
    from tpem_seg.models import open_package

    copy = _copy(exported, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=4, sort_keys=True))
    assert open_package(copy).manifest.name == "test"


def test_engines_folder_is_outside_the_checksums(exported, tmp_path):
    from tpem_seg.models import open_package

    copy = _copy(exported, tmp_path)
    (copy / "engines").mkdir()
    (copy / "engines" / "gpu_sm90_trt10.3.0_fp16_b1-4-8.plan").write_bytes(b"plan")
    (copy / "engines" / "gpu_sm90_trt10.3.0_fp16_b1-4-8.json").write_text("{}")
    assert open_package(copy).manifest.name == "test"


def test_export_refuses_existing_output_unless_overwrite(exported, tpem_checkpoint, cli):
    path, _ = exported
    result = cli(["export", str(tpem_checkpoint), "-o", str(path)])
    assert result.exit_code == 2 and "--overwrite" in result.stderr


def test_export_that_fails_parity_writes_nothing(tpem_checkpoint, tmp_path, monkeypatch, cli):
    """A graph that disagrees with PyTorch is refused with one line and exit code 2; no package appears."""
    from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend

    original = OnnxRuntimeBackend._infer

    def skewed(self, batch):  # a broken export: class 1 a little too likely
        logits = original(self, batch)
        logits[:, 1] += 0.01
        return logits

    monkeypatch.setattr(OnnxRuntimeBackend, "_infer", skewed)
    out = tmp_path / "bad.tpem"
    result = cli(["export", str(tpem_checkpoint), "-o", str(out)])
    assert result.exit_code == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "fails parity" in error and "nothing was written" in error
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_checkpoint_errors_are_one_line(tmp_path, cli, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "ft.pt")
    cases = {
        "carries its architecture": ["export", str(ckpt), "-o", str(tmp_path / "a.tpem"), "--hidden-size", "64"],
        "no such checkpoint": ["export", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "b.tpem")],
        "must be 3 comma-separated": ["export", str(ckpt), "-o", str(tmp_path / "c.tpem"), "--spacing", "1,2"],
        "should name a package folder": ["export", str(ckpt), "-o", str(tmp_path / "d")],
        "--channel-names gives 3": ["export", str(ckpt), "-o", str(tmp_path / "e.tpem"), "--channel-names",
                                    "a,b,c"],
        "opset 17+": ["export", str(ckpt), "-o", str(tmp_path / "f.tpem"), "--opset", "13"],
    }
    for expected, argv in cases.items():
        result = cli(argv)
        assert result.exit_code == 2, (expected, result.stderr)
        assert expected in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_pretraining_checkpoint_is_refused(tmp_path, cli, make_checkpoint):
    ckpt = make_checkpoint(tmp_path / "mim.pt", kind="pretrain")
    result = cli(["export", str(ckpt), "-o", str(tmp_path / "x.tpem")])
    assert result.exit_code == 2 and "finetune" in result.stderr


def test_tensorrt_flag_fails_before_exporting_without_a_gpu(tpem_checkpoint, tmp_path, cli):
    from tpem_seg.runtime.engines import tensorrt_unavailable

    reason = tensorrt_unavailable("cuda")
    if reason is None:
        pytest.skip("TensorRT and a GPU are here")
    result = cli(["export", str(tpem_checkpoint), "-o", str(tmp_path / "t.tpem"), "--tensorrt"])
    assert result.exit_code == 2 and reason in result.stderr and not (tmp_path / "t.tpem").exists()


def test_normalization_flags():
    from tpem_seg.cli.export import normalization_from_flags
    from tpem_seg.errors import TpemSegError
    from tpem_seg.models import NormalizationSpec

    assert normalization_from_flags(None, None, None) is None
    assert normalization_from_flags("percentile", None, None) == NormalizationSpec("percentile")
    assert normalization_from_flags(None, "0.5,99", None) == NormalizationSpec("percentile", percentiles=(0.5, 99))
    assert normalization_from_flags("range", None, "0,1024") == NormalizationSpec("range", range=(0, 1024))
    assert normalization_from_flags(None, None, "0,1024").mode == "range"
    assert normalization_from_flags("none", None, None) == NormalizationSpec("none")
    for args, message in [(("range", None, None), "needs --intensity-range"),
                          (("percentile", None, "0,1"), "is for --normalization range"),
                          (("none", "1,99", None), "is for --normalization percentile"),
                          (("zscore", None, None), "unknown"),
                          (("percentile", "99,1", None), "0 <= low < high")]:
        with pytest.raises(TpemSegError, match=message):
            normalization_from_flags(*args)
