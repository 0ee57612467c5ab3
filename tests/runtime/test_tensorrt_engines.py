"""TensorRT engines without TensorRT: cache keys, profiles, rebuild decisions, FP32 layer choice, errors.

The real build and run are at the end, skipped unless TensorRT and a CUDA GPU are present.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tpem_seg.errors import BackendUnavailable, TpemSegError
from tpem_seg.models import open_package
from tpem_seg.runtime import engines as E

MACHINE = E.MachineInfo("NVIDIA H100 80GB HBM3", "9.0", "10.3.0")
NO_TENSORRT = E.tensorrt_unavailable("cuda")
needs_tensorrt = pytest.mark.skipif(NO_TENSORRT is not None, reason=f"needs TensorRT and a GPU: {NO_TENSORRT}")


@pytest.fixture
def package(package_2ch, tmp_path):
    """A writable copy of the unetr-test package."""
    return open_package(shutil.copytree(package_2ch.path, tmp_path / "copy.tpem"))


def key(machine=MACHINE, precision="fp16", profile=E.BatchProfile(1, 4, 8)):
    return E.engine_key(machine, E.EngineConfig(precision, profile))


def store(package, machine=MACHINE, precision="fp16", profile=E.BatchProfile(1, 4, 8), plan=b"plan"):
    return E.write_engine(package.engines_dir, key(machine, precision, profile), plan,
                          {"onnx_sha256": E.onnx_sha256(package), "parity": None})


# -- keys and profiles -------------------------------------------------------------------------------


def test_cache_key_is_gpu_compute_capability_tensorrt_precision_and_profile():
    k = key()
    assert k.stem == "nvidia-h100-80gb-hbm3_sm90_trt10.3.0_fp16_b1-4-8"
    assert E.EngineKey.from_dict(json.loads(json.dumps(k.to_dict()))) == k
    assert key(precision="fp32").stem != k.stem and key(profile=E.BatchProfile(1, 2, 4)).stem != k.stem


def test_profile_choice():
    assert E.choose_profile() == E.BatchProfile(1, 4, 8)
    assert E.choose_profile(2) == E.BatchProfile(1, 2, 4)
    assert E.choose_profile(4, 16) == E.BatchProfile(1, 4, 16)
    assert E.choose_profile(3, 3).shapes(2, (16, 32, 32)) == ((1, 2, 16, 32, 32), (3, 2, 16, 32, 32),
                                                             (3, 2, 16, 32, 32))
    assert E.BatchProfile(1, 4, 8).covers(8) and not E.BatchProfile(1, 4, 8).covers(9)
    with pytest.raises(TpemSegError, match="smaller than the batch size"):
        E.choose_profile(8, 4)
    with pytest.raises(TpemSegError, match="min <= opt <= max"):
        E.BatchProfile(2, 1, 4)


def test_engine_config_checks():
    with pytest.raises(TpemSegError, match="--precision fp16"):
        E.EngineConfig("bf16")
    with pytest.raises(TpemSegError, match="positive"):
        E.EngineConfig(workspace_gib=0)
    with pytest.raises(TpemSegError, match="0..5"):
        E.EngineConfig(optimization_level=7)


# -- rebuild decisions -------------------------------------------------------------------------------


def sidecar(k=None, onnx="a" * 64, **changes):
    meta = {"format": E.SIDECAR_FORMAT, "version": E.SIDECAR_VERSION, "key": (k or key()).to_dict(),
            "onnx_sha256": onnx}
    meta.update(changes)
    return meta


@pytest.mark.parametrize("meta, reason", [
    (sidecar(), None),
    (sidecar(key(E.MachineInfo(MACHINE.gpu, "9.0", "10.2.0"))), "built with TensorRT 10.2.0, this machine has 10.3.0"),
    (sidecar(key(E.MachineInfo("NVIDIA A100-SXM4-80GB", "8.0", "10.3.0"))), "compute capability 8.0"),
    (sidecar(key(E.MachineInfo("NVIDIA H100 PCIe", "9.0", "10.3.0"))), "built on a NVIDIA H100 PCIe"),
    (sidecar(key(precision="fp32")), "it is fp32, fp16 was asked for"),
    (sidecar(onnx="b" * 64), "another model.onnx"),
    (sidecar(version=99), "not a tpem-seg engine record"),
    (sidecar(key={"gpu": "x"}), "malformed"),
])
def test_engine_that_does_not_match_the_machine_is_never_run(meta, reason):
    found = E.engine_mismatch(meta, MACHINE, "fp16", "a" * 64)
    assert found == reason if reason is None else reason in found


def test_cache_finds_the_largest_fitting_profile_and_checks_the_plan(package):
    small = store(package, profile=E.BatchProfile(1, 4, 8), plan=b"small")
    large = store(package, profile=E.BatchProfile(1, 8, 16), plan=b"large")
    store(package, machine=E.MachineInfo(MACHINE.gpu, "9.0", "10.0.0"), profile=E.BatchProfile(1, 16, 32))
    store(package, precision="fp32", profile=E.BatchProfile(1, 16, 64))
    assert E.find_engine(package, MACHINE, "fp16").plan == large.plan
    assert E.find_engine(package, MACHINE, "fp32").key.precision == "fp32"
    large.plan.write_bytes(b"tampered")  # engines/ is outside the manifest's checksums; the sidecar has its own
    assert E.find_engine(package, MACHINE, "fp16").plan == small.plan
    assert "fails its sha256" in E.engine_status(large, MACHINE, "fp16", E.onnx_sha256(package))
    assert open_package(package.path).manifest.files == package.manifest.files  # engines never touch the package


def test_parity_is_recorded_in_the_sidecar(package):
    record = store(package)
    E.record_parity(record, {"max_abs_prob_diff": 0.01, "passed": True})
    (listed,) = E.list_engines(package)
    assert listed.meta["parity"]["max_abs_prob_diff"] == 0.01 and listed.meta["plan_sha256"]
    assert not list(package.engines_dir.glob(".*partial"))


def test_missing_engine_error_says_how_to_build_it(package):
    store(package, machine=E.MachineInfo(MACHINE.gpu, "9.0", "10.0.0"))
    with pytest.raises(E.EngineMissing) as err:
        E.find_engine(package, MACHINE, "fp16")
    message = str(err.value)
    assert "\n" not in message and f"tpem-seg engine build {package.path} --precision fp16" in message
    assert "built with TensorRT 10.0.0, this machine has 10.3.0" in message and "TPEM_SEG_TENSORRT_BUILD=1" in message


def test_read_only_package_keeps_engines_in_the_user_cache(package, tmp_path, monkeypatch):
    monkeypatch.setenv("TPEM_SEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(E.os, "access", lambda path, mode: False)
    folder = E.writable_engine_dir(package)
    assert folder.parent == tmp_path / "cache" / "engines" and folder.name.startswith(package.name + "-")
    E.write_engine(folder, key(), b"plan", {"onnx_sha256": E.onnx_sha256(package)})
    assert E.find_engine(package, MACHINE, "fp16").plan.parent == folder
    assert not package.engines_dir.exists()


# -- which layers stay in FP32 -----------------------------------------------------------------------


def test_fp32_layers_on_the_exported_unetr_graph(package_2ch):
    """On the ops of the exported unetr-test ONNX (as TensorRT's parser imports them): every LayerNorm,
    Softmax and every compute step of the decomposed InstanceNorms is held in FP32; no convolution,
    matrix product, attention einsum or GELU is."""
    onnx = pytest.importorskip("onnx")

    nodes = onnx.load(str(package_2ch.onnx_path)).graph.node
    unknown = {n.op_type for n in nodes} - set(E.ONNX_OP_LAYER_KINDS)
    assert not unknown, f"map these ONNX ops to TensorRT layer kinds: {unknown}"
    held = set(E.fp32_layer_names((n.name, E.ONNX_OP_LAYER_KINDS[n.op_type]) for n in nodes))
    in_norm = [n for n in nodes if "/instance_norm/" in n.name and n.op_type != "Unsqueeze"]
    assert in_norm and all(n.name in held for n in in_norm)
    for n in nodes:
        if n.op_type in ("LayerNormalization", "InstanceNormalization", "Softmax"):
            assert n.name in held, n.name
        if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Einsum", "Erf", "LeakyRelu") or (
                n.op_type in ("Div", "Add", "Mul") and "norm" not in n.name):
            assert n.name not in held, n.name


def test_fp32_layers_of_a_decomposed_norm():
    layers = [("node_ReduceMean_3", "REDUCE/AVG"), ("node_Sub_4", "ELEMENTWISE/SUB"),
              ("node_Pow_5", "ELEMENTWISE/POW"), ("node_Sqrt_7", "UNARY/SQRT"), ("node_Div_8", "ELEMENTWISE/DIV"),
              ("encoder1/norm/Mul", "ELEMENTWISE/PROD"), ("decoder/conv_norm", "CONVOLUTION"),
              ("node_gelu", "ELEMENTWISE/PROD"), ("node_Erf_29", "UNARY/ERF"), ("attn/softmax", "SOFTMAX")]
    assert E.fp32_layer_names(layers) == ["node_ReduceMean_3", "node_Pow_5", "node_Sqrt_7", "encoder1/norm/Mul",
                                          "attn/softmax"]


# -- what a user sees without TensorRT or a GPU ------------------------------------------------------


def test_availability_names_the_fix():
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    reason = TensorRTBackend.unavailable("cpu")
    assert reason.startswith("TensorRT needs a CUDA GPU") and "--backend onnxruntime" in reason
    if NO_TENSORRT and "TensorRT" in NO_TENSORRT and "GPU is visible" not in NO_TENSORRT:
        assert "pip install 'tpem-seg[tensorrt]'" in TensorRTBackend.unavailable("cuda")


def test_tensorrt_on_the_cpu_is_a_user_error(package_2ch):
    from tpem_seg.runtime.backends import create_backend
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    with pytest.raises(BackendUnavailable, match="TensorRT needs a CUDA GPU"):
        create_backend("tensorrt", package_2ch, device="cpu")
    assert "not bf16" in TensorRTBackend.unavailable("cuda", "bf16", package_2ch)
    if NO_TENSORRT:
        assert TensorRTBackend.unavailable("cuda", "fp16", package_2ch)  # auto falls through to onnxruntime


def test_engine_commands_without_tensorrt(package_2ch, tmp_path, cli):
    if not NO_TENSORRT:
        pytest.skip("TensorRT and a GPU are here")
    result = cli(["engine", "build", str(package_2ch.path)])
    assert result.exit_code == 2 and NO_TENSORRT in result.stderr and result.stderr.strip().count("\n") == 0
    result = cli(["engine", "list", str(package_2ch.path)])
    assert result.exit_code == 0 and "0 engine(s)" in result.stdout and "cannot check them here" in result.stdout
    result = cli(["run", str(tmp_path / "in.npy"), "-o", str(tmp_path / "o.tif"), "-m",
                  str(package_2ch.path), "--backend", "tensorrt", "--device", "cpu"])
    assert result.exit_code == 2 and "TensorRT needs a CUDA GPU" in result.stderr


def test_onnxruntime_tensorrt_provider_options(tmp_path):
    from tpem_seg.runtime.backends.ort_backend import tensorrt_provider_options

    fp16 = tensorrt_provider_options(1, "fp16", tmp_path)
    assert fp16["device_id"] == 1 and fp16["trt_fp16_enable"] and fp16["trt_layer_norm_fp32_fallback"]
    assert fp16["trt_engine_cache_enable"] and fp16["trt_engine_cache_path"] == str(tmp_path)
    assert fp16["trt_timing_cache_enable"] and fp16["trt_timing_cache_path"] == str(tmp_path)
    fp32 = tensorrt_provider_options(0, "fp32", tmp_path)
    assert not fp32["trt_fp16_enable"] and "trt_layer_norm_fp32_fallback" not in fp32


# -- with TensorRT and a GPU -------------------------------------------------------------------------


@needs_tensorrt
def test_build_run_and_reuse_an_fp16_engine(package):
    from tpem_seg.export.engine_build import build_checked_engine
    from tpem_seg.runtime.backends import create_backend

    record, report = build_checked_engine(package, E.EngineConfig("fp16", E.choose_profile(2, 4)), "cuda")
    assert report.passed and record.meta["parity"]["passed"] and record.meta["builder"]["fp32_layers"]
    assert E.find_engine(package, E.machine_info("cuda"), "fp16").plan == record.plan
    batch = np.random.default_rng(0).random((5, 2, *package.manifest.tile), dtype=np.float32)  # > max: chunks
    with create_backend("tensorrt", package, "cuda", "fp16") as trt, create_backend("onnxruntime", package,
                                                                                     "cpu") as ort:
        assert np.abs(trt.infer(batch) - ort.infer(batch)).max() < 0.5


@needs_tensorrt
def test_segmenter_runs_on_tensorrt(package):
    from tpem_seg import Segmenter
    from tpem_seg.export.engine_build import build_checked_engine

    build_checked_engine(package, E.EngineConfig("fp32", E.choose_profile(2)), "cuda")
    volume = np.random.default_rng(1).random((2, 20, 40, 40), dtype=np.float32)
    with Segmenter(package, backend="tensorrt", device="cuda", precision="fp32", output="logits") as seg:
        trt = seg.segment(volume, axes="CZYX")
    with Segmenter(package, backend="onnxruntime", device="cpu", output="logits") as seg:
        ort = seg.segment(volume, axes="CZYX")
    assert np.abs(trt - ort).max() < 1e-2


def test_only_tensorrt_10_is_used():
    assert E.tensorrt_version_problem("10.3.0") is None
    problem = E.tensorrt_version_problem("11.4.0")
    assert "TensorRT 11.4.0" in problem and "pip install 'tensorrt>=10,<11'" in problem
