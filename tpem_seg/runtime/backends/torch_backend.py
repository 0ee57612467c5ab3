"""PyTorch backend: the package's weights in MONAI's UNETR, eager, with autocast.

torch and MONAI are imported in :meth:`TorchBackend._load`, never at import time.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from tpem_seg.errors import BackendUnavailable, PackageError
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.backends.base import Backend
from tpem_seg.runtime.devices import cpu_supports_bf16

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """MONAI UNETR in PyTorch eager mode; fp32, or fp16/bf16 autocast (bf16 only on CPUs)."""

    name = "torch"

    @classmethod
    def availability(cls, device: str) -> str | None:
        missing = [m for m in ("torch", "monai") if importlib.util.find_spec(m) is None]
        if missing:
            return f"the torch backend needs {' and '.join(missing)}: pip install 'tpem-seg[torch]'"
        return None

    @classmethod
    def supports(cls, package: ModelPackage, precision: str) -> bool:
        return package.weights_path is not None

    def _load(self) -> None:
        import torch

        from tpem_seg.models.unetr import build_unetr, clean_state_dict

        if self.package.weights_path is None:
            raise PackageError(f"package {self.package.name} carries no PyTorch weights; use --backend onnxruntime")
        if self.device == "cpu" and self.precision == "fp16":
            raise BackendUnavailable("fp16 on the CPU is not supported by the torch backend; use bf16 or fp32")
        if self.device == "cpu" and self.precision == "bf16" and not cpu_supports_bf16():
            log.warning("this CPU has no native bf16; bf16 autocast will be slow")
        state = torch.load(self.package.weights_path, map_location="cpu", weights_only=True)
        model = build_unetr(self.package.manifest.config)
        model.load_state_dict(clean_state_dict(state))
        self._torch = torch
        self._device = torch.device(self.device)
        self._model = model.to(self._device).eval()
        self._autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(batch).to(self._device, non_blocking=True)
        with torch.inference_mode(), torch.autocast(self._device.type, dtype=self._autocast_dtype,
                                                     enabled=self._autocast_dtype is not None):
            logits = self._model(x)
        return logits.float().cpu().numpy()

    def _close(self) -> None:
        self._model = None
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()
