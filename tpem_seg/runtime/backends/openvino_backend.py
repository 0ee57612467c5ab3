"""OpenVINO backend: the package's ``model.onnx`` on the CPU plugin, fp32 or bf16, no PyTorch.

OpenVINO reads the ONNX file itself, so a run on this backend loads neither torch nor MONAI
(about 2 s of a whole ``tpem-seg run`` on the torch path) and compiles in well under a second.
Two things make it fast on small tiles:

- a static batch: the network is compiled for exactly ``default_batch_size()`` tiles (OpenVINO's
  CPU plugin runs fixed shapes about twice as fast as a dynamic batch); shorter calls are
  padded with zero tiles and cut back, longer ones run in chunks;
- instance norm as one ``MVN`` operation: the export writes each 5D InstanceNormalization as a
  hierarchical decomposition (three ReduceMean per statistic, accurate in ONNX Runtime's float32,
  see :func:`tpem_seg.export.onnx.decompose_instance_norm`), which OpenVINO runs as separate
  reductions (a third of the layer time in its per-layer counters, bf16 at batch 8; the
  end-to-end effect: benchmarks/results/openvino_tiles_*.md); :func:`fuse_instance_norms`
  folds each back into OpenVINO's MVN (same formula, ``(x - mean) / sqrt(var + eps)`` per
  sample and channel).
"""

from __future__ import annotations

import importlib.util
import logging
import math

import numpy as np

from tpem_seg.errors import BackendUnavailable
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.backends.base import Backend
from tpem_seg.runtime.devices import cpu_count, cpu_supports_bf16

log = logging.getLogger(__name__)

#: OpenVINO's names for the precisions this backend runs (its INFERENCE_PRECISION_HINT).
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
#: Voxels per call the default batch aims for (8 tiles of 16x64x64), as for torch bf16.
BATCH_VOXELS = 1 << 19
#: The spatial axes of an ``(N, C, D, H, W)`` tensor, as positive and as negative indices.
SPATIAL_AXES = ({2, 3, 4}, {-1, -2, -3})


class OpenVINOBackend(Backend):
    """The package's ONNX graph compiled by OpenVINO for the CPU.

    Precisions: fp32, and bf16 where the CPU has native bf16 (AVX-512 BF16 or AMX; OpenVINO's
    ``INFERENCE_PRECISION_HINT``). Options: ``threads`` (``INFERENCE_NUM_THREADS``, default the
    cores this process may use) and ``batch_size`` (the compiled batch; default enough tiles to
    fill about :data:`BATCH_VOXELS`, from 1 to 8).
    """

    name = "openvino"
    OPTIONS = (*Backend.OPTIONS, "threads")

    def __init__(self, package: ModelPackage, device: str = "cpu", precision: str = "fp32", *,
                 threads: int | None = None, batch_size: int | None = None):
        super().__init__(package, device=device, precision=precision, batch_size=batch_size)
        self.threads = threads

    @classmethod
    def precisions(cls, device: str) -> tuple[str, ...]:
        if device.startswith("cuda"):
            return ()
        return ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",)

    @classmethod
    def unavailable(cls, device: str = "cpu", precision: str = "fp32", package: ModelPackage | None = None,
                    **options) -> str | None:
        if device.startswith("cuda"):
            return "the openvino backend runs on the CPU only; use --device cpu or another --backend"
        reason = super().unavailable(device, precision, package, **options)
        if reason is not None:
            return reason
        if importlib.util.find_spec("openvino") is None:
            return "the openvino backend needs OpenVINO: pip install 'tpem-seg[openvino]'"
        return None

    @property
    def static_batch(self) -> int:
        """The batch the network is compiled for: a call runs in chunks of exactly this many tiles, the
        last one padded with zero tiles (on the 25x512x512 stack, rows of 121 tiles at 8: 14 padded
        tiles of 242; a second network compiled for the remainder would cost more than it saves)."""
        return self.default_batch_size()

    def default_batch_size(self) -> int:
        """``batch_size`` where set, else enough tiles to fill about :data:`BATCH_VOXELS` (1 to 8)."""
        return self.batch_size or max(1, min(8, BATCH_VOXELS // math.prod(self.input_spec.tile)))

    def _load(self) -> None:
        import openvino as ov

        reason = self.unavailable(self.device, self.precision, self.package)
        if reason is not None:
            raise BackendUnavailable(reason)
        core = ov.Core()
        model = core.read_model(str(self.package.onnx_path))
        fused = fuse_instance_norms(model)
        log.debug("openvino: %d instance norm(s) fused into MVN", fused)
        batch = self.static_batch
        model.reshape({model.input(0): [batch, self.input_spec.channels, *self.input_spec.tile]})
        self._compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": self.threads or cpu_count()})
        self._request = self._compiled.create_infer_request()
        self._padded = np.zeros((batch, self.input_spec.channels, *self.input_spec.tile), np.float32)

    def describe(self) -> str:
        extras = [f"batch {self.static_batch}"] + ([f"{self.threads} threads"] if self.threads else [])
        return f"{self.name} on {self.device} ({', '.join([self.precision, *extras])})"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        size = self.static_batch
        out = np.empty((len(batch), self.input_spec.classes, *self.input_spec.tile), np.float32)
        for start in range(0, len(batch), size):
            chunk = batch[start:start + size]
            if len(chunk) < size:
                self._padded[:len(chunk)] = chunk
                self._padded[len(chunk):] = 0.0
                chunk = self._padded
            # Zero-copy both ways: the request reads the (contiguous) chunk in place, and its output
            # is the request's own buffer, reused by the next call: copied out once, here.
            logits = self._request.infer({0: np.ascontiguousarray(chunk)}, share_inputs=True, share_outputs=True)[0]
            out[start:start + size] = logits[:len(out) - start]
        return out

    def _close(self) -> None:
        self._request = None
        self._compiled = None


def fuse_instance_norms(model) -> int:
    """Replace, in the OpenVINO ``model``, every decomposed instance norm by one MVN; returns how many.

    Matched by structure, not by name: ``Divide(Subtract(x, mean(x)), Sqrt(Add(mean(s * s), eps)))``
    with ``s`` that Subtract, each ``mean`` a chain of ReduceMean (keep_dims) over exactly the
    spatial axes of a 5D ``x``, and ``eps`` a scalar constant. The Divide's output is rewired to
    ``MVN(x, axes=(2, 3, 4), normalize_variance, eps, inside_sqrt)``; the scale and bias after it
    stay as they are. A graph without the pattern is left unchanged.
    """
    from openvino import opset13 as ops

    fused = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Divide":
            continue
        matched = _match_instance_norm(node)
        if matched is None:
            continue
        x, eps = matched
        mvn = ops.mvn(x, ops.constant(np.array([2, 3, 4], np.int64)), True, eps, "inside_sqrt")
        node.output(0).replace(mvn.output(0))
        fused += 1
    if fused:
        model.validate_nodes_and_infer_types()
    return fused


def _match_instance_norm(divide):
    """(x, eps) where ``divide`` ends a decomposed instance norm of x (see :func:`fuse_instance_norms`), else None."""
    centred = _source(divide, 0)
    std = _source(divide, 1)
    if centred.get_type_name() != "Subtract" or std.get_type_name() != "Sqrt":
        return None
    x = centred.input(0).get_source_output()
    rank = x.get_partial_shape().rank
    if not rank.is_static or rank.get_length() != 5 or _spatial_mean_of(_source(centred, 1)) != x:
        return None
    var_eps = _source(std, 0)
    if var_eps.get_type_name() != "Add":
        return None
    eps = _scalar(_source(var_eps, 1))
    squared = _spatial_mean_of(_source(var_eps, 0))
    if eps is None or squared is None:
        return None
    square = squared.get_node()
    if square.get_type_name() != "Multiply" or any(_source(square, i) != centred for i in (0, 1)):
        return None
    return x, eps


def _spatial_mean_of(node):
    """The output that a chain of keep-dims ReduceMean ending at ``node`` averages over exactly the
    spatial axes (each once), else None."""
    axes: list[int] = []
    source = None
    while node.get_type_name() == "ReduceMean" and node.get_attributes().get("keep_dims"):
        reduced = _constant_values(_source(node, 1))
        if reduced is None:
            return None
        axes += [int(a) for a in reduced]
        source = node.input(0).get_source_output()
        node = source.get_node()
    if len(axes) != len(set(axes)) or set(axes) not in SPATIAL_AXES:
        return None
    return source


def _source(node, index: int):
    return node.input(index).get_source_output().get_node()


def _constant_values(node) -> np.ndarray | None:
    return np.asarray(node.get_data()).ravel() if node.get_type_name() == "Constant" else None


def _scalar(node) -> float | None:
    values = _constant_values(node)
    return float(values[0]) if values is not None and values.size == 1 else None
