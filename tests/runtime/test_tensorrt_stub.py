"""The TensorRT build and run code driven through stand-ins for ``tensorrt`` and ``cuda-python``.

This checks OUR orchestration (which calls, in which order, buffers, chunking, the cache, the
sidecar, parity) against stand-ins shaped like the TensorRT 10 and cuda-python APIs as we read
their documentation. It does not verify TensorRT itself: the stand-in "engine" runs the ONNX with
ONNX Runtime, and its "device memory" is host memory. Real TensorRT runs are in
test_tensorrt_engines.py (skipped without TensorRT and a GPU).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tpem_seg.models import open_package
from tpem_seg.runtime import engines as E

onnx = pytest.importorskip("onnx")

from trt_stand_ins import stand_ins  # noqa: E402,F401  (the fixture)


@pytest.fixture
def package(package_2ch, tmp_path):
    return open_package(shutil.copytree(package_2ch.path, tmp_path / "copy.tpem"))


def test_build_holds_norms_in_fp32_and_caches_engine_and_timing(stand_ins, package):
    from tpem_seg.export.engine_build import build_checked_engine

    trt, _ = stand_ins
    assert E.tensorrt_unavailable("cuda") is None
    record, report = build_checked_engine(package, E.EngineConfig("fp16", E.choose_profile(2, 3), workspace_gib=2),
                                          "cuda")
    network, config = trt.built[0]
    assert config.flags == {trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS}
    assert config.pool == {trt.MemoryPoolType.WORKSPACE: 2 << 30}
    assert config.profiles[0].shapes == {"name": "input", "min": (1, 2, 16, 32, 32), "opt": (2, 2, 16, 32, 32),
                                         "max": (3, 2, 16, 32, 32)}
    held = [layer for layer in network.layers if layer.precision is trt.float32]
    assert {layer.type.name for layer in held} == {"NORMALIZATION", "SOFTMAX", "REDUCE", "ELEMENTWISE", "UNARY"}
    assert all("norm" in layer.name for layer in held if layer.type.name in ("ELEMENTWISE", "UNARY"))
    assert all(layer.output_types == {0: trt.float32} for layer in held)
    assert all(layer.compute_precision is trt.float32 for layer in held if layer.type.name == "NORMALIZATION")
    meta = json.loads(record.sidecar.read_text())
    assert meta["key"]["tensorrt"] == "10.3.0" and meta["key"]["gpu"] == "NVIDIA Stand-in GPU"
    assert meta["builder"]["fp32_layers"] == [layer.name for layer in held]
    assert meta["parity"]["passed"] and report.max_abs_prob_diff < 1e-5
    assert (package.engines_dir / meta["builder"]["timing_cache"]).read_bytes() == b"timing"
    assert open_package(package.path).manifest.files == package.manifest.files


def test_backend_keeps_buffers_and_chunks_large_batches(stand_ins, package):
    from tpem_seg.runtime.backends import create_backend

    _, rt = stand_ins
    E.build_engine(package, E.EngineConfig("fp32", E.choose_profile(2, 3)), "cuda")
    batch = np.random.default_rng(0).random((5, 2, 16, 32, 32), dtype=np.float32)
    with create_backend("tensorrt", package, "cuda", "fp32") as trt, create_backend("onnxruntime", package,
                                                                                     "cpu") as ort:
        allocated = set(rt.allocations)
        assert len(allocated) == 4  # input/output on the "device" and pinned staging, allocated once
        np.testing.assert_allclose(trt.infer(batch), ort.infer(batch), atol=1e-6)
        np.testing.assert_allclose(trt.infer(batch[:1]), ort.infer(batch[:1]), atol=1e-6)
        assert set(rt.allocations) == allocated
        assert rt.copies.count("cudaMemcpyHostToDevice") == 3  # chunks of 3 + 2, then 1
    assert not rt.allocations  # all freed on close


def test_segmenter_on_the_tensorrt_backend(stand_ins, package):
    from tpem_seg import Segmenter

    E.build_engine(package, E.EngineConfig("fp16"), "cuda")
    volume = np.random.default_rng(1).random((2, 20, 40, 40), dtype=np.float32)
    with Segmenter(package, backend="tensorrt", device="cuda", precision="fp16", output="logits") as seg:
        assert seg.backend.name == "tensorrt"
        trt = seg.segment(volume, axes="CZYX")
    with Segmenter(package, backend="onnxruntime", device="cpu", output="logits") as seg:
        np.testing.assert_allclose(trt, seg.segment(volume, axes="CZYX"), atol=1e-5)


def test_engine_from_another_tensorrt_is_rebuilt_or_refused(stand_ins, package, monkeypatch):
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    trt, _ = stand_ins
    old = E.build_engine(package, E.EngineConfig("fp16"), "cuda")
    monkeypatch.setattr(trt, "__version__", "10.4.0")
    reason = TensorRTBackend.unavailable("cuda", "fp16", package)  # auto picks another backend
    assert "built with TensorRT 10.3.0, this machine has 10.4.0" in reason
    with pytest.raises(E.EngineMissing, match="built with TensorRT 10.3.0, this machine has 10.4.0"):
        TensorRTBackend(package, "cuda", "fp16", build=False).load()
    with TensorRTBackend(package, "cuda", "fp16", build=True) as backend:
        assert backend.record.key.tensorrt == "10.4.0" and backend.record.plan != old.plan
    monkeypatch.setenv(E.BUILD_ENV, "1")
    assert TensorRTBackend.unavailable("cuda", "fp16", package) is None


def test_engine_failing_parity_is_deleted(stand_ins, package, monkeypatch):
    from tpem_seg.export.engine_build import EngineParityOptions, build_checked_engine
    from tpem_seg.export.errors import ParityError
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    original = TensorRTBackend._run

    def drifting(self, chunk):
        logits = original(self, chunk)
        logits[:, 0] += 1.0
        return logits

    monkeypatch.setattr(TensorRTBackend, "_run", drifting)
    with pytest.raises(ParityError, match="the engine was deleted"):
        build_checked_engine(package, E.EngineConfig("fp16"), "cuda", EngineParityOptions(1, 1))
    assert not list(package.engines_dir.glob("*.plan")) and not list(package.engines_dir.glob("*_b*.json"))


def test_engine_cli_with_stand_ins(stand_ins, package, capsys):
    from tpem_seg.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["engine", "build", str(package.path), "--precision", "fp16", "--batch-size", "2", "--parity-tiles",
              "1"])
    assert exit_.value.code == 0
    with pytest.raises(SystemExit):
        main(["engine", "list", str(package.path)])
    out = capsys.readouterr().out
    assert "_fp16_b1-2-4.plan" in out and "1 engine(s)" in out and "fits" in out


def test_tensorrt_11_is_refused_with_the_fix(stand_ins, monkeypatch):
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    trt, _ = stand_ins
    monkeypatch.setattr(trt, "__version__", "11.4.0")
    assert "pip install 'tensorrt>=10,<11'" in TensorRTBackend.unavailable("cuda")
