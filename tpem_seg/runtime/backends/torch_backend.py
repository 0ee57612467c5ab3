"""PyTorch backend: the package's weights in MONAI's UNETR, eager or compiled, with autocast.

torch and MONAI are imported in :meth:`TorchBackend._load`, never at import time.
"""

from __future__ import annotations

import importlib.util
import logging
import math

import numpy as np

from tpem_seg.errors import BackendUnavailable, PackageError
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.backends.base import Backend
from tpem_seg.runtime.devices import cpu_supports_bf16

log = logging.getLogger(__name__)

#: Voxels per call that bf16 on a CPU aims for (8 tiles of 16x64x64).
CPU_BF16_BATCH_VOXELS = 1 << 19


class TorchBackend(Backend):
    """MONAI UNETR in PyTorch; fp32, or fp16/bf16 autocast (bf16 only on CPUs).

    Options (all off by default, so ``create_backend("torch", ...)`` is plain eager):

    - ``compile``: run the network through ``torch.compile`` (True for the default mode, or a
      mode name such as ``"max-autotune"``). The first batch compiles (tens of seconds on a
      GPU; on a CPU minutes, and in this repository's tests not faster, see benchmarks/results).
    - ``cuda_graphs``: on CUDA, compile with ``mode="reduce-overhead"`` (CUDA graphs) and pad
      every batch to ``static_batch`` tiles, so one graph is recorded and replayed.
    - ``channels_last``: weights and input in ``torch.channels_last_3d`` (NDHWC) layout.
    - ``cast_weights``: for fp16/bf16, cast the weights and the input to that type instead of
      autocasting (no per-call weight casts; normalisation then also runs in low precision).
    - ``static_batch``: pad batches smaller than this to it (fixed shapes for compiled graphs).
    - ``threads``: torch's intra-op threads (``torch.set_num_threads``, process-wide), set on load.
    - ``batch_size``: see :class:`~tpem_seg.runtime.backends.base.Backend`.

    :meth:`infer_tensor` runs on device tensors; the Segmenter's GPU path
    (:mod:`tpem_seg.runtime.gpu`) uses it so tiles and logits never leave the GPU.
    """

    name = "torch"
    OPTIONS = (*Backend.OPTIONS, "compile", "cuda_graphs", "channels_last", "cast_weights", "static_batch", "threads")

    def __init__(self, package: ModelPackage, device: str = "cpu", precision: str = "fp32", *,
                 compile: bool | str = False, cuda_graphs: bool = False, channels_last: bool = False,
                 cast_weights: bool = False, static_batch: int | None = None, threads: int | None = None,
                 batch_size: int | None = None):
        super().__init__(package, device=device, precision=precision, batch_size=batch_size)
        problem = self._option_problem(device, precision, cuda_graphs=cuda_graphs, cast_weights=cast_weights)
        if problem:
            raise BackendUnavailable(problem)
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.channels_last = channels_last
        self.cast_weights = cast_weights
        self.static_batch = static_batch
        self.threads = threads

    @classmethod
    def precisions(cls, device: str) -> tuple[str, ...]:
        return ("fp32", "fp16", "bf16") if device.startswith("cuda") else ("fp32", "bf16")

    @classmethod
    def unavailable(cls, device: str = "cpu", precision: str = "fp32", package: ModelPackage | None = None,
                    **options) -> str | None:
        reason = super().unavailable(device, precision, package, **options)
        if reason is not None:
            return reason
        missing = [m for m in ("torch", "monai") if importlib.util.find_spec(m) is None]
        if missing:
            return f"the torch backend needs {' and '.join(missing)}: pip install 'tpem-seg[torch]'"
        if package is not None and package.weights_path is None:
            return f"package {package.name} carries no PyTorch weights; use --backend onnxruntime"
        return cls._option_problem(device, precision, **options)

    @staticmethod
    def _option_problem(device: str, precision: str, **options) -> str | None:
        if options.get("cuda_graphs") and not device.startswith("cuda"):
            return "CUDA graphs need a CUDA device; drop cuda_graphs or use --device cuda"
        if options.get("cast_weights") and precision not in ("fp16", "bf16"):
            return f"cast_weights needs precision fp16 or bf16, not {precision}"
        return None

    def default_batch_size(self) -> int:
        """``static_batch`` where set (the batch every call is padded to), then ``batch_size``. For
        bf16 on a CPU, enough small tiles per call to fill about :data:`CPU_BF16_BATCH_VOXELS` (from 2
        to 8 tiles): its convolutions gain from the larger batch (``vessels-2p`` tiles: 12.4 ms per tile
        at 8 against 21.6 ms at 2), while fp32 does not (24.6 against 26.9 ms, and 31 ms at 16).
        Otherwise the base class's choice."""
        if self.static_batch:
            return self.static_batch
        if not self.batch_size and self.device == "cpu" and self.precision == "bf16":
            return max(2, min(8, CPU_BF16_BATCH_VOXELS // math.prod(self.input_spec.tile)))
        return super().default_batch_size()

    @property
    def supports_device_tensors(self) -> bool:
        """Whether :meth:`infer_tensor` keeps data on a GPU (the Segmenter's fast GPU path)."""
        return self.device.startswith("cuda")

    def _load(self) -> None:
        import torch

        from tpem_seg.models.checkpoint import clean_state_dict
        from tpem_seg.models.unetr import build_unetr

        reason = self.unavailable(self.device, self.precision, self.package)
        if reason is not None:
            raise PackageError(reason) if self.package.weights_path is None else BackendUnavailable(reason)
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device == "cpu" and self.precision == "bf16" and not cpu_supports_bf16():
            log.warning("this CPU has no native bf16; bf16 autocast will be slow")
        state = torch.load(self.package.weights_path, map_location="cpu", weights_only=True)
        model = build_unetr(self.package.manifest.config)
        model.load_state_dict(clean_state_dict(state))
        self._torch = torch
        self._device = torch.device(self.device)
        model = model.to(self._device).eval()
        low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        self._input_dtype = low if self.cast_weights else torch.float32
        if self.cast_weights:
            model = model.to(low)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        if self._device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed tile shapes: pick the fastest conv algorithms once
        self._eager = model
        self._model = model
        if self.compile or self.cuda_graphs:
            mode = "reduce-overhead" if self.cuda_graphs else (self.compile if isinstance(self.compile, str) else None)
            log.info("torch.compile(mode=%s): the first batch compiles", mode)
            self._model = torch.compile(model, mode=mode, dynamic=False)
        self._autocast_dtype = None if self.cast_weights else low

    def describe(self) -> str:
        extras = [flag for flag, on in (("compiled", bool(self.compile)), ("cuda graphs", self.cuda_graphs),
                                        ("channels-last", self.channels_last),
                                        ("weights cast", self.cast_weights)) if on]
        extras += [f"{self.threads} threads"] if self.threads else []
        return f"{self.name} on {self.device} ({', '.join([self.precision, *extras])})"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        x = self._torch.from_numpy(batch).to(self._device, non_blocking=True)
        return self.infer_tensor(x).cpu().numpy()

    def infer_tensor(self, x):
        """Logits ``(N, K, D, H, W)`` float32 on this backend's device for tiles ``x (N, C, D, H, W)``
        (a float32 tensor on the same device); shapes are not re-checked here."""
        torch = self._torch
        n = x.shape[0]
        if self.static_batch and n < self.static_batch:
            x = torch.cat([x, x.new_zeros((self.static_batch - n, *x.shape[1:]))])
        x = x.to(self._input_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.inference_mode(), torch.autocast(self._device.type, dtype=self._autocast_dtype,
                                                     enabled=self._autocast_dtype is not None):
            logits = self._model(x)
        # CUDA-graph outputs are overwritten by the next replay: take a copy of them.
        logits = logits[:n].float()
        if self.cuda_graphs:
            logits = logits.clone()
        return logits.contiguous()

    @property
    def supports_mc_dropout(self) -> bool:
        """The package's network has dropout (``config.dropout_rate > 0``)."""
        return self.package.manifest.config.dropout_rate > 0

    def start_mc(self, seed: int = 0) -> None:
        """Seed the dropout draws of :meth:`infer_mc` (a generator state of its own: other torch code
        in the process neither moves nor is moved by it)."""
        torch = self._torch
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(seed)
            self._mc_state = self._rng_state()

    def _infer_mc(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if getattr(self, "_mc_state", None) is None:
            raise RuntimeError("infer_mc before start_mc")
        x = torch.from_numpy(batch).to(self._device).to(self._input_dtype)
        dropouts = [m for m in self._eager.modules() if isinstance(m, torch.nn.Dropout)]
        with torch.random.fork_rng(devices=self._rng_devices()):
            self._set_rng_state(self._mc_state)
            for m in dropouts:  # only dropout: normalisation layers stay in eval mode
                m.train()
            try:
                with torch.inference_mode(), torch.autocast(self._device.type, dtype=self._autocast_dtype,
                                                             enabled=self._autocast_dtype is not None):
                    logits = self._eager(x)
            finally:
                for m in dropouts:
                    m.eval()
            self._mc_state = self._rng_state()
        return logits.float().cpu().numpy()

    def _rng_devices(self) -> list:
        return [self._device] if self._device.type == "cuda" else []

    def _rng_state(self):
        torch = self._torch
        return (torch.get_rng_state(), torch.cuda.get_rng_state(self._device) if self._device.type == "cuda" else None)

    def _set_rng_state(self, state) -> None:
        torch = self._torch
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], self._device)

    def _close(self) -> None:
        self._mc_state = None
        self._model = None
        self._eager = None
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()
