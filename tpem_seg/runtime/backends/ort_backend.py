"""ONNX Runtime backend: CPU, or the CUDA / TensorRT execution providers where installed."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from tpem_seg.errors import BackendUnavailable
from tpem_seg.runtime.backends.base import Backend
from tpem_seg.runtime.devices import cpu_count, device_index

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def installed_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def providers_for(device: str, precision: str) -> list:
    """Execution providers, best first, for ``device`` ("cpu" or "cuda[:N]")."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    index = device_index(device)
    chosen: list = []
    installed = installed_providers()
    if "TensorrtExecutionProvider" in installed:
        chosen.append(("TensorrtExecutionProvider", {"device_id": index, "trt_fp16_enable": precision == "fp16"}))
    if "CUDAExecutionProvider" in installed:
        chosen.append(("CUDAExecutionProvider", {"device_id": index}))
    return chosen + ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """Runs the package's ``model.onnx`` with ONNX Runtime (fp32 graph; fp16 via the TensorRT provider)."""

    name = "onnxruntime"

    @classmethod
    def availability(cls, device: str) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "the onnxruntime backend needs ONNX Runtime: pip install onnxruntime (or onnxruntime-gpu)"
        if device != "cpu" and not set(GPU_PROVIDERS) & set(installed_providers()):
            return ("the installed ONNX Runtime has no CUDA provider: pip install onnxruntime-gpu, "
                    "or use --device cpu")
        return None

    @classmethod
    def supports(cls, package, precision: str) -> bool:
        return precision == "fp32"

    def _load(self) -> None:
        import onnxruntime as ort

        if self.precision != "fp32" and self.device == "cpu":
            raise BackendUnavailable(f"onnxruntime on the CPU runs fp32 only (asked {self.precision}); "
                                     f"use --precision fp32 or --backend torch")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = cpu_count()
        self._session = ort.InferenceSession(str(self.package.onnx_path), sess_options=options,
                                             providers=providers_for(self.device, self.precision))
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = self._session.get_outputs()[0].name
        log.debug("onnxruntime providers: %s", self._session.get_providers())

    def describe(self) -> str:
        providers = getattr(self, "_session", None)
        used = ",".join(p.replace("ExecutionProvider", "") for p in providers.get_providers()) if providers else ""
        return f"{self.name} on {self.device} ({self.precision}{'; ' + used if used else ''})"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: batch})[0]

    def _close(self) -> None:
        self._session = None
