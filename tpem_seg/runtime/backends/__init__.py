"""Backend registry and the one factory: names to classes, imported only when chosen.

``create_backend("auto", ...)`` picks the first backend that can run here, in the order
TensorRT on a CUDA GPU, then ONNX Runtime (GPU providers where installed), PyTorch on
CUDA; on the CPU ONNX Runtime, then PyTorch (OpenVINO, CPU only, runs when named or when a
tuning run chose it). Each class answers for itself whether it can (:meth:`Backend.unavailable`). The CLI, the bench, export parity and the tuner all build
their backends here.
"""

from __future__ import annotations

import importlib
import logging

from tpem_seg.errors import BackendUnavailable
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.backends.base import PRECISIONS, Backend, BackendSpec, InputSpec
from tpem_seg.runtime.devices import resolve_device

log = logging.getLogger(__name__)

#: name -> "module:Class", imported lazily so heavy libraries load only when used.
BACKENDS = {
    "tensorrt": "tpem_seg.runtime.backends.tensorrt_backend:TensorRTBackend",
    "onnxruntime": "tpem_seg.runtime.backends.ort_backend:OnnxRuntimeBackend",
    "torch": "tpem_seg.runtime.backends.torch_backend:TorchBackend",
    "openvino": "tpem_seg.runtime.backends.openvino_backend:OpenVINOBackend",
}


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose auto, {', '.join(BACKENDS)}")
    module_name, cls_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def unavailable(name: str, device: str = "cpu", precision: str = "fp32", package: ModelPackage | None = None,
                **options) -> str | None:
    """None when backend ``name`` can run here as asked, else why not (see :meth:`Backend.unavailable`)."""
    try:
        cls = backend_class(name)
    except ImportError as err:
        return f"the {name} backend is not importable ({err})"
    return cls.unavailable(device, precision, package, **options)


def available_backends(device: str = "cpu") -> dict[str, str | None]:
    """Each backend name -> None if it can run on ``device`` here (at fp32), else why not."""
    return {name: unavailable(name, device) for name in BACKENDS}


def auto_order(device: str) -> list[str]:
    """The backends ``auto`` tries on ``device``, best first."""
    return ["tensorrt", "onnxruntime", "torch"] if device.startswith("cuda") else ["onnxruntime", "torch"]


def resolve_spec(spec: BackendSpec, package: ModelPackage) -> BackendSpec:
    """``spec`` with its device resolved and ``auto`` replaced by the backend that will run it;
    raises :class:`BackendUnavailable` with the reason when none can."""
    device = resolve_device(spec.device)
    options = dict(spec.options)
    if spec.name != "auto":
        reason = unavailable(spec.name, device, spec.precision, package, **options)
        if reason is not None:
            raise BackendUnavailable(reason)
        return spec.replace(device=device)
    reasons = {}
    for candidate in auto_order(device):
        reasons[candidate] = unavailable(candidate, device, spec.precision, package, **options)
        if reasons[candidate] is None:
            log.info("backend auto -> %s", candidate)
            return spec.replace(name=candidate, device=device)
    raise BackendUnavailable(f"no backend can run {package.name} on {device} at {spec.precision}: "
                             + "; ".join(f"{k}: {v}" for k, v in reasons.items()))


def create_backend(name: str | BackendSpec, package: ModelPackage, device: str = "auto", precision: str = "fp32",
                   **options) -> Backend:
    """An unloaded backend for ``package``: from a :class:`BackendSpec`, or from its fields
    (``name``, ``device``, ``precision`` and the backend's own ``**options``, e.g. ``threads=2``
    for onnxruntime or ``channels_last=True`` for torch). ``name="auto"`` picks the first backend
    that can run as asked (:func:`auto_order`)."""
    if isinstance(name, BackendSpec):
        if options or device != "auto" or precision != "fp32":
            raise TypeError("create_backend(spec, package) takes no device, precision or options: the spec has them")
        spec = name
    else:
        spec = BackendSpec(name, device, precision, options)
    spec = resolve_spec(spec, package)
    return backend_class(spec.name)(package, device=spec.device, precision=spec.precision, **spec.options)


__all__ = ["BACKENDS", "PRECISIONS", "Backend", "BackendSpec", "InputSpec", "auto_order", "available_backends",
           "backend_class", "create_backend", "resolve_spec", "unavailable"]
