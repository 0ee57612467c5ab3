"""ONNX Runtime backend: CPU, or the CUDA / TensorRT execution providers where installed."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from tpem_seg.errors import BackendUnavailable
from tpem_seg.runtime.backends.base import Backend
from tpem_seg.runtime.devices import cpu_count, device_index
from tpem_seg.util.cache import cache_root

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def installed_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def ort_tensorrt_cache_dir() -> Path:
    """Where ONNX Runtime's TensorRT provider keeps its engines and timing cache between sessions."""
    return cache_root() / "ort-tensorrt"


def tensorrt_provider_options(index: int, precision: str, cache_dir: Path) -> dict:
    """TensorRT execution provider options (names as in ONNX Runtime's TensorRT EP documentation).

    Without the engine cache the provider rebuilds its engine in every session (minutes for a
    ViT-B UNETR); with fp16, ``trt_layer_norm_fp32_fallback`` keeps layer-norm Pow/Reduce in FP32.
    """
    options = {"device_id": index, "trt_fp16_enable": precision == "fp16",
               "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
               "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir)}
    if precision == "fp16":
        options["trt_layer_norm_fp32_fallback"] = True
    return options


def providers_for(device: str, precision: str) -> list:
    """Execution providers, best first, for ``device`` ("cpu" or "cuda[:N]")."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    index = device_index(device)
    chosen: list = []
    installed = installed_providers()
    if "TensorrtExecutionProvider" in installed:
        cache_dir = ort_tensorrt_cache_dir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        chosen.append(("TensorrtExecutionProvider", tensorrt_provider_options(index, precision, cache_dir)))
    if "CUDAExecutionProvider" in installed:
        chosen.append(("CUDAExecutionProvider", {"device_id": index}))
    return chosen + ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """Runs the package's ``model.onnx`` with ONNX Runtime.

    Precisions: fp32 (CPU and GPU); fp16 on a GPU through the TensorRT execution provider only;
    int8 on the CPU, from a quantised copy of the graph given as ``model_path``
    (:mod:`tpem_seg.runtime.quantize`).

    Options: ``model_path`` runs another ONNX file of the same network instead of the package's
    (e.g. the int8 copy), named ``variant`` in :meth:`describe`; ``threads`` sets the intra-op
    threads (default: the cores this process may use); ``spinning`` False stops idle intra-op
    threads from spinning (None: ONNX Runtime's default, on), which leaves the cores to the
    prefetch and writer threads between operators; ``batch_size``: see :class:`Backend`.
    """

    name = "onnxruntime"
    OPTIONS = (*Backend.OPTIONS, "model_path", "variant", "threads", "spinning")

    def __init__(self, package, device: str = "cpu", precision: str = "fp32", *, model_path: Path | None = None,
                 variant: str | None = None, threads: int | None = None, spinning: bool | None = None,
                 batch_size: int | None = None):
        super().__init__(package, device=device, precision=precision, batch_size=batch_size)
        self.model_path = Path(model_path) if model_path is not None else None
        self.variant = variant
        self.threads = threads
        self.spinning = spinning

    @classmethod
    def precisions(cls, device: str) -> tuple[str, ...]:
        return ("fp32", "fp16") if device.startswith("cuda") else ("fp32", "int8")

    @classmethod
    def unavailable(cls, device: str = "cpu", precision: str = "fp32", package=None, **options) -> str | None:
        reason = super().unavailable(device, precision, package, **options)
        if reason is not None:
            return reason
        if importlib.util.find_spec("onnxruntime") is None:
            return "the onnxruntime backend needs ONNX Runtime: pip install onnxruntime (or onnxruntime-gpu)"
        if device != "cpu":
            installed = set(installed_providers())
            if not set(GPU_PROVIDERS) & installed:
                return ("the installed ONNX Runtime has no CUDA provider: pip install onnxruntime-gpu, "
                        "or use --device cpu")
            if precision == "fp16" and "TensorrtExecutionProvider" not in installed:
                return ("onnxruntime runs fp16 only through its TensorRT execution provider, not installed here; "
                        "use --precision fp32 or --backend tensorrt")
        if precision == "int8" and options.get("model_path") is None:
            return ("int8 with onnxruntime needs a quantised copy of the model (model_path=..., see "
                    "tpem_seg.runtime.quantize); use --precision fp32")
        return None

    def _load(self) -> None:
        import onnxruntime as ort

        reason = self.unavailable(self.device, self.precision, self.package, model_path=self.model_path)
        if reason is not None:
            raise BackendUnavailable(reason)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads or cpu_count()
        if self.spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        model_path = self.model_path or self.package.onnx_path
        self._session = ort.InferenceSession(str(model_path), sess_options=options,
                                             providers=providers_for(self.device, self.precision))
        self._input_name = self._session.get_inputs()[0].name
        self._output_name = self._session.get_outputs()[0].name
        log.debug("onnxruntime providers: %s", self._session.get_providers())

    def describe(self) -> str:
        providers = getattr(self, "_session", None)
        used = ",".join(p.replace("ExecutionProvider", "") for p in providers.get_providers()) if providers else ""
        extras = [self.variant] if self.variant else []
        extras += [f"{self.threads} threads"] if self.threads else []
        extras += ["no spinning"] if self.spinning is False else []
        precision = ", ".join([self.precision, *extras])
        return f"{self.name} on {self.device} ({precision}{'; ' + used if used else ''})"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: batch})[0]

    @property
    def supports_mc_dropout(self) -> bool:
        """The package carries a dropout-active graph (``mc_dropout_file``) and this backend runs the
        package's own network (not a ``model_path`` variant such as an int8 copy)."""
        return self.package.manifest.mc_dropout_file is not None and self.model_path is None

    def start_mc(self, seed: int = 0) -> None:
        """A fresh session of the dropout-active graph: its Dropout nodes carry fixed seeds (set at
        export), so each run draws the same masks in the same order. ``seed`` must be 0 (the graph's)."""
        import onnxruntime as ort

        if seed != 0:
            raise ValueError("ONNX Runtime draws the seeds stored in the package's dropout graph; use seed 0")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or cpu_count()
        # TensorRT builds inference engines: the random Dropout stays with CUDA or the CPU.
        providers = [p for p in providers_for(self.device, self.precision)
                     if (p[0] if isinstance(p, tuple) else p) != "TensorrtExecutionProvider"]
        # ONNX Runtime's EliminateDropout rewrite removes Dropout nodes even when training_mode is
        # true (the graph would then be deterministic); keep them.
        self._mc_session = ort.InferenceSession(str(self.package.mc_dropout_path),
                                                sess_options=options, providers=providers,
                                                disabled_optimizers=["EliminateDropout"])

    def _infer_mc(self, batch: np.ndarray) -> np.ndarray:
        if getattr(self, "_mc_session", None) is None:
            raise RuntimeError("infer_mc before start_mc")
        return self._mc_session.run([self._output_name], {self._input_name: batch})[0]

    def _close(self) -> None:
        self._session = None
        self._mc_session = None
