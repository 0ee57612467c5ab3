"""Backend registry: names to classes, imported only when chosen.

``create_backend("auto", ...)`` picks the fastest backend that can run here:
TensorRT on a CUDA GPU, then ONNX Runtime with a GPU provider, PyTorch on
CUDA, then ONNX Runtime on the CPU, then PyTorch on the CPU.
"""

from __future__ import annotations

import importlib
import logging

from tpem_seg.errors import BackendUnavailable
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.backends.base import PRECISIONS, Backend, InputSpec
from tpem_seg.runtime.devices import resolve_device

log = logging.getLogger(__name__)

#: name -> "module:Class", imported lazily so heavy libraries load only when used.
BACKENDS = {
    "tensorrt": "tpem_seg.runtime.backends.tensorrt_backend:TensorRTBackend",
    "onnxruntime": "tpem_seg.runtime.backends.ort_backend:OnnxRuntimeBackend",
    "torch": "tpem_seg.runtime.backends.torch_backend:TorchBackend",
}


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose auto, {', '.join(BACKENDS)}")
    module_name, cls_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def available_backends(device: str = "cpu") -> dict[str, str | None]:
    """Each backend name -> None if it can run on ``device`` here, else why not."""
    reasons = {}
    for name in BACKENDS:
        try:
            reasons[name] = backend_class(name).availability(device)
        except ImportError as err:
            reasons[name] = f"not importable ({err})"
    return reasons


def _auto_order(device: str) -> list[str]:
    return ["tensorrt", "onnxruntime", "torch"] if device.startswith("cuda") else ["onnxruntime", "torch"]


def create_backend(name: str, package: ModelPackage, device: str = "auto", precision: str = "fp32") -> Backend:
    """An unloaded backend instance; ``name="auto"`` picks the fastest one that can run."""
    device = resolve_device(device)
    if name == "auto":
        reasons = available_backends(device)
        for candidate in _auto_order(device):
            cls = backend_class(candidate)
            if reasons.get(candidate) is None and cls.supports(package, precision):
                log.info("backend auto -> %s", candidate)
                return cls(package, device=device, precision=precision)
        raise BackendUnavailable(f"no backend can run {package.name} on {device} at {precision}: "
                                 + "; ".join(f"{k}: {v}" for k, v in reasons.items() if v))
    cls = backend_class(name)
    reason = cls.availability(device)
    if reason is not None:
        raise BackendUnavailable(reason)
    return cls(package, device=device, precision=precision)


__all__ = ["BACKENDS", "PRECISIONS", "Backend", "InputSpec", "available_backends", "backend_class",
           "create_backend"]
