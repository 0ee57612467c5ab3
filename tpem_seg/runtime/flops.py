"""Network FLOPs and the machine's measured dense matmul peak, for achieved-FLOP/s figures.

FLOPs are counted once per network with ``torch.utils.flop_counter.FlopCounterMode`` on one tile
built on the meta device (no weights, no compute: a fraction of a second even for ViT-B at 128³).
It counts the matrix products and convolutions (2 FLOPs per multiply-add), not norms or
activations: the usual convention, against which a matmul peak is the fair ceiling.

torch is imported inside the functions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tpem_seg.models.config import UNETRConfig

log = logging.getLogger(__name__)

#: Square matmul sizes for the peak: large enough to be compute-bound, small enough to be quick.
PEAK_SIZE = {"cpu": 2048, "cuda": 8192}


def unetr_flops(config: UNETRConfig, batch: int = 1) -> int:
    """FLOPs of one forward pass of the UNETR ``config`` on ``batch`` tiles (meta device, nothing computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tpem_seg.models.unetr import build_unetr

    with torch.device("meta"):
        model = build_unetr(config).eval()
        sample = torch.empty((batch, config.in_channels, *config.tile))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(sample)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class MatmulPeak:
    """Measured dense matmul throughput: the best of ``repeats`` timings of ``size``³ products."""

    device: str
    precision: str
    size: int
    flops_per_s: float
    library: str = "torch"

    def to_dict(self) -> dict:
        return {"device": self.device, "precision": self.precision, "size": self.size,
                "flops_per_s": self.flops_per_s, "library": self.library}


def _dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}[precision]


def measure_matmul_peak(device: str = "cpu", precision: str = "fp32", size: int | None = None,
                        repeats: int = 5, min_seconds: float = 0.3) -> MatmulPeak:
    """Dense ``size x size`` matmul FLOP/s at ``precision`` on ``device`` (best of ``repeats``).

    fp32/bf16/fp16 use ``torch.matmul``; int8 uses ``torch._int_mm`` (int8 x int8 -> int32, VNNI
    on x86, tensor cores on CUDA). Each repeat runs enough products to last ``min_seconds``;
    CUDA is synchronised around every timing. fp32 on CUDA is true fp32 (TF32 off for matmul,
    torch's default), while cuDNN convolutions default to TF32: a CUDA fp32 network can beat it.
    """
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    size = size or PEAK_SIZE[kind]
    dtype = _dtype(precision)
    if precision == "int8":
        a = torch.randint(-64, 64, (size, size), dtype=dtype, device=device)
        b = torch.randint(-64, 64, (size, size), dtype=dtype, device=device)

        def product():
            return torch._int_mm(a, b)
    else:
        a = torch.randn(size, size, device=device).to(dtype)
        b = torch.randn(size, size, device=device).to(dtype)

        def product():
            return torch.matmul(a, b)

    sync = torch.cuda.synchronize if kind == "cuda" else (lambda: None)
    with torch.inference_mode():
        product()  # warm-up: kernels, thread pools, caches
        sync()
        started = time.perf_counter()
        product()
        sync()
        per_call = max(time.perf_counter() - started, 1e-6)
        calls = max(1, int(min_seconds / per_call))
        best = 0.0
        for _ in range(repeats):
            sync()
            started = time.perf_counter()
            for _ in range(calls):
                product()
            sync()
            best = max(best, 2.0 * size ** 3 * calls / (time.perf_counter() - started))
    log.info("matmul peak %s %s: %.1f GFLOP/s", device, precision, best / 1e9)
    return MatmulPeak(device, precision, size, best)


def measure_onnxruntime_matmul_peak(size: int = 2048, repeats: int = 5, min_seconds: float = 0.3,
                                    threads: int | None = None) -> MatmulPeak | None:
    """fp32 ``size``³ MatMul FLOP/s in ONNX Runtime on the CPU (its own GEMM, MLAS), best of ``repeats``.

    torch's fp32 matmul is not the fastest GEMM on every CPU: ONNX Runtime's network can beat it,
    so the fp32 peak of the report is the better of the two. None without the ``onnx`` package
    (needed to build the one-node graph).
    """
    try:
        from onnx import TensorProto, helper
    except ImportError:
        log.info("onnx not installed: no ONNX Runtime matmul peak")
        return None
    import numpy as np
    import onnxruntime as ort

    from tpem_seg.runtime.devices import cpu_count

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_count()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.random((size, size), dtype=np.float32), "b": rng.random((size, size), dtype=np.float32)}
    session.run(None, feeds)
    started = time.perf_counter()
    session.run(None, feeds)
    calls = max(1, int(min_seconds / max(time.perf_counter() - started, 1e-6)))
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            session.run(None, feeds)
        best = max(best, 2.0 * size ** 3 * calls / (time.perf_counter() - started))
    log.info("matmul peak cpu fp32 (onnxruntime): %.1f GFLOP/s", best / 1e9)
    return MatmulPeak("cpu", "fp32", size, best, library="onnxruntime")
