"""Conformance: every backend, the TensorRT stand-in included, honours the one interface.

Parametrised over every backend: the lifecycle, the declared input spec, batch limits, declared
capabilities, and agreement with an oracle on the same tiles (PyTorch fp32 for the others, ONNX
Runtime for PyTorch). Real TensorRT is skipped with the reason where it cannot run.
"""

import shutil

import numpy as np
import pytest

from trt_stand_ins import stand_ins  # noqa: F401  (the fixture)

from tpem_seg.errors import BackendUnavailable
from tpem_seg.models import open_package
from tpem_seg.runtime.backends import (BACKENDS, BackendSpec, available_backends, backend_class, create_backend,
                                       unavailable)
from tpem_seg.runtime.compare import compare_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Every backend as the conformance test runs it: (id, backend name, device, options).
CASES = [("torch", "torch", "cpu", {}), ("onnxruntime", "onnxruntime", "cpu", {}), ("openvino", "openvino", "cpu", {}),
         ("tensorrt-stand-in", "tensorrt", "cuda", {"build": True}), ("tensorrt", "tensorrt", "cuda", {})]


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request, package_2ch, tmp_path):
    """(spec, package) for one backend; the stand-in gets its own package copy for its engine."""
    case_id, name, device, options = request.param
    package = package_2ch
    if case_id == "tensorrt-stand-in":
        request.getfixturevalue("stand_ins")
        package = open_package(shutil.copytree(package_2ch.path, tmp_path / "copy.tpem"))
    reason = unavailable(name, device, "fp32", package, **options)
    if reason is not None:
        pytest.skip(f"{case_id} cannot run here: {reason}")
    return BackendSpec(name, device, "fp32", options), package


def tiles(package, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, package.manifest.config.in_channels, *package.manifest.tile),
                                              dtype=np.float32)


def test_lifecycle(case):
    spec, package = case
    backend = create_backend(spec, package)
    with pytest.raises(RuntimeError, match="before load"):
        backend.infer(tiles(package, 1))
    with backend as loaded:
        assert loaded is backend and backend.describe().startswith(spec.name)
        assert backend.infer(tiles(package, 1)).dtype == np.float32
    with pytest.raises(RuntimeError, match="before load"):
        backend.infer(tiles(package, 1))
    backend.close()  # closing twice is harmless
    with backend:  # and a closed backend loads again
        backend.infer(tiles(package, 1))


def test_declared_input_spec_is_checked(case):
    spec, package = case
    manifest = package.manifest
    with create_backend(spec, package) as backend:
        declared = backend.input_spec
        assert (declared.channels, declared.tile, declared.classes) == (
            manifest.config.in_channels, tuple(manifest.tile), manifest.config.out_channels)
        with pytest.raises(TypeError, match="float32"):
            backend.infer(tiles(package, 1).astype(np.float64))
        with pytest.raises(ValueError, match="batch shape"):
            backend.infer(np.zeros((1, declared.channels + 1, *declared.tile), np.float32))
        with pytest.raises(TypeError, match="numpy"):
            backend.infer(tiles(package, 1).tolist())


def test_batch_limits(case):
    """One tile, the default batch, and more tiles than the default (TensorRT chunks beyond its profile)."""
    spec, package = case
    with create_backend(spec, package) as backend:
        default = backend.default_batch_size()
        assert default >= 1 and (backend.static_batch is None or backend.static_batch == default)
        batch = tiles(package, 2 * default + 1)
        assert backend.infer(batch[:1]).shape == (1, package.manifest.config.out_channels, *package.manifest.tile)
        whole = backend.infer(batch)
        np.testing.assert_allclose(whole[:1], backend.infer(batch[:1]), atol=1e-5)
        if backend.input_spec.max_batch is not None:
            with pytest.raises(ValueError, match="exceeds"):
                backend.infer(tiles(package, backend.input_spec.max_batch + 1))
    with create_backend(spec.replace(options={"batch_size": 3}), package) as backend:
        assert backend.default_batch_size() == 3


def test_agrees_with_the_oracle(case):
    """fp32 logits of the same tiles: probabilities within the export's tolerance (1e-4)."""
    spec, package = case
    oracle = BackendSpec("onnxruntime", "cpu") if spec.name == "torch" else BackendSpec("torch", "cpu")
    if unavailable(oracle.name, oracle.device, "fp32", package):
        pytest.skip(f"the oracle {oracle.name} cannot run here")
    batch = tiles(package, 3, seed=1)
    with create_backend(spec, package) as backend, create_backend(oracle, package) as reference:
        a = compare_logits(backend.infer(batch), reference.infer(batch), package.manifest.classes)
    assert a.max_abs_prob_diff < 1e-4 and a.voxel_agreement > 0.999, a


def test_declared_capabilities_answer_with_reasons(case):
    spec, package = case
    cls = backend_class(spec.name)
    assert "fp32" in cls.precisions(spec.device)
    missing = next(p for p in ("fp16", "bf16", "int8") if p not in cls.precisions(spec.device))
    assert f"not {missing}" in cls.unavailable(spec.device, missing, package, **spec.options)
    assert "no option(s) warp_speed" in cls.unavailable(spec.device, "fp32", package, warp_speed=True)
    with create_backend(spec, package) as backend:
        assert backend.supports_device_tensors is False  # none of these runs torch on a GPU


def test_every_backend_answers_availability():
    reasons = available_backends("cpu")
    assert set(reasons) == set(BACKENDS)
    for name, reason in reasons.items():
        assert reason is None or "install" in reason or "--backend" in reason, (name, reason)


def test_onnxruntime_fp16_only_through_its_tensorrt_provider(monkeypatch):
    """The capability and the load agree: fp16 is offered on a GPU, and runs only with the TensorRT EP."""
    from tpem_seg.runtime.backends import ort_backend

    cls = ort_backend.OnnxRuntimeBackend
    assert cls.precisions("cuda") == ("fp32", "fp16") and "fp16" not in cls.precisions("cpu")
    monkeypatch.setattr(ort_backend, "installed_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "TensorRT execution provider" in cls.unavailable("cuda", "fp16")
    assert cls.unavailable("cuda", "fp32") is None
    monkeypatch.setattr(ort_backend, "installed_providers", lambda: ["TensorrtExecutionProvider",
                                                                     "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert cls.unavailable("cuda", "fp16") is None
    assert "quantised copy" in cls.unavailable("cpu", "int8")


def test_torch_options_are_reachable_through_the_factory(package_2ch):
    with create_backend("torch", package_2ch, device="cpu", precision="bf16", channels_last=True,
                        cast_weights=True, static_batch=3) as backend:
        assert backend.channels_last and backend.cast_weights and backend.static_batch == 3
        assert backend.default_batch_size() == 3 and "channels-last" in backend.describe()
        assert backend.infer(tiles(package_2ch, 2)).shape[0] == 2  # padded to 3 inside, cut back
    with pytest.raises(BackendUnavailable, match="CUDA graphs need a CUDA device"):
        create_backend("torch", package_2ch, device="cpu", cuda_graphs=True)
    with pytest.raises(BackendUnavailable, match="no option"):
        create_backend("onnxruntime", package_2ch, device="cpu", channels_last=True)


def test_auto_and_specs(package_2ch):
    spec = BackendSpec("auto", "cpu", "bf16")
    backend = create_backend(spec, package_2ch)
    assert backend.name == "torch"  # onnxruntime has no bf16 on the CPU: auto falls through
    assert BackendSpec.from_dict(spec.to_dict()) == spec and hash(spec) == hash(BackendSpec("auto", "cpu", "bf16"))
    with pytest.raises(TypeError, match="the spec has them"):
        create_backend(spec, package_2ch, threads=2)


def test_unknown_backend_and_missing_gpu_are_user_errors(package_2ch):
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        backend_class("tflite")
    from tpem_seg.runtime.devices import cuda_device_count

    if cuda_device_count() == 0:
        with pytest.raises(BackendUnavailable, match="--device cpu"):
            create_backend("onnxruntime", package_2ch, device="cuda")


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_onnx_backends_do_not_import_torch(name, package_2ch):
    import subprocess
    import sys

    reason = unavailable(name, "cpu", "fp32", package_2ch)
    if reason:
        pytest.skip(f"{name} cannot run here: {reason}")
    code = ("import sys, numpy as np\n"
            "from tpem_seg import Segmenter\n"
            f"seg = Segmenter({str(package_2ch.path)!r}, backend={name!r}, device='cpu')\n"
            "seg.segment(np.random.rand(2, 16, 40, 40).astype('float32'), axes='CZYX')\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
