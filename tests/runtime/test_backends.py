"""Conformance: every backend available here runs the same input and agrees."""

import numpy as np
import pytest

from tpem_seg.errors import BackendUnavailable
from tpem_seg.runtime.backends import BACKENDS, available_backends, backend_class, create_backend


def available_names():
    return [name for name, reason in available_backends("cpu").items() if reason is None]


def test_every_backend_answers_availability():
    reasons = available_backends("cpu")
    assert set(reasons) == set(BACKENDS)
    for name, reason in reasons.items():
        assert reason is None or ("pip install" in reason or "install" in reason), (name, reason)


def test_conformance_all_backends_same_input(package_2ch):
    names = available_names()
    if len(names) < 2:
        pytest.skip(f"only {names} available; conformance needs two backends")
    batch = np.random.default_rng(0).random((3, 2, *package_2ch.manifest.tile), dtype=np.float32)
    results = {}
    for name in names:
        with create_backend(name, package_2ch, device="cpu") as backend:
            results[name] = backend.infer(batch)
    reference = results.pop("torch") if "torch" in results else results.pop(names[0])
    ref_probs = _softmax(reference)
    for name, logits in results.items():
        probs = _softmax(logits)
        assert np.abs(probs - ref_probs).max() < 1e-4, name
        disagree = probs.argmax(1) != ref_probs.argmax(1)
        top2 = np.sort(ref_probs, axis=1)[:, -2:]
        assert not (disagree & (top2[:, 1] - top2[:, 0] > 1e-4)).any(), f"{name}: labels differ away from ties"


def test_base_class_checks_shape_and_dtype(package_2ch):
    with create_backend("onnxruntime", package_2ch, device="cpu") as backend:
        with pytest.raises(TypeError, match="float32"):
            backend.infer(np.zeros((1, 2, *package_2ch.manifest.tile), dtype=np.float64))
        with pytest.raises(ValueError, match="batch shape"):
            backend.infer(np.zeros((1, 3, *package_2ch.manifest.tile), dtype=np.float32))


def test_unknown_backend_and_missing_gpu_are_user_errors(package_2ch):
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        backend_class("tflite")
    from tpem_seg.runtime.devices import cuda_device_count

    if cuda_device_count() == 0:
        with pytest.raises(BackendUnavailable, match="--device cpu"):
            create_backend("onnxruntime", package_2ch, device="cuda")


def test_onnxruntime_backend_does_not_import_torch(package_2ch, tmp_path):
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from tpem_seg import Segmenter\n"
            f"seg = Segmenter({str(package_2ch.path)!r}, backend='onnxruntime', device='auto')\n"
            "seg.segment(np.random.rand(2, 16, 40, 40).astype('float32'), axes='CZYX')\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
