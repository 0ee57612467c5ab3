"""PyTorch network -> ONNX with a dynamic batch axis and a fixed spatial tile, and the checks and
graph passes export applies to it (I/O contract, opset, accurate InstanceNorm, optional onnxslim)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: torch.nn.Module, path: str | Path, in_channels: int, tile: tuple[int, int, int],
                opset: int = DEFAULT_OPSET, max_batch: int = 256, dropout: bool = False) -> Path:
    """Write ``model`` as ONNX at ``path``: input ``(N, in_channels, *tile)`` float32 -> logits.

    Uses the ``torch.export`` based exporter (opset 17+ keeps LayerNormalization native;
    18 by default); the batch axis is dynamic from 1 to ``max_batch``. With ``dropout`` the
    network's Dropout modules are exported in training mode (ONNX ``Dropout`` with
    ``training_mode`` true: Monte-Carlo dropout), everything else in eval mode; the model is left
    in eval mode.
    """
    import torch  # here, not at the top: the CLI reads DEFAULT_OPSET without loading torch

    path = Path(path)
    model = model.eval().cpu()
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)] if dropout else []
    for m in dropouts:
        m.train()
    example = torch.zeros(2, in_channels, *tile)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    arg_name = next(iter(_forward_arg_names(model)))
    # The exporter narrates each stage on stdout; keep library output to logging.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as chatter, \
            _quiet_below_debug("onnx_ir", "onnxscript"):
        warnings.simplefilter("ignore", category=FutureWarning)
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={arg_name: {0: batch}}, optimize=True)
    for m in dropouts:
        m.eval()
    log.debug("torch.onnx.export: %s", chatter.getvalue().strip())
    program.save(str(path), external_data=False)
    return path


#: The network with dropout active, exported for networks trained with dropout (Monte-Carlo dropout).
MC_DROPOUT_FILE = "model_mc.onnx"


def export_dropout_onnx(model: torch.nn.Module, path: str | Path, config, opset: int = DEFAULT_OPSET,
                        instance_norm: str = "decomposed") -> Path:
    """Write the network (``config``: its :class:`~tpem_seg.models.config.UNETRConfig`) with its
    dropout active at ``path`` (:func:`export_onnx` with ``dropout``), through the main graph's
    passes, its Dropout nodes seeded (:func:`seed_dropout`), and checked (:func:`check_onnx`)."""
    from tpem_seg.export.errors import ExportError

    path = export_onnx(model, path, config.in_channels, config.tile, opset=opset, dropout=True)
    if instance_norm == "decomposed":
        decompose_instance_norm(path)
    if not seed_dropout(path):
        raise ExportError(f"the network has dropout {config.dropout_rate:g} but its dropout graph has no Dropout "
                          "node; report this with the checkpoint's architecture")
    check_onnx(path, config.in_channels, config.out_channels, config.tile)
    return path


def seed_dropout(path: str | Path, seed: int = 0) -> int:
    """Give every ``Dropout`` node of the ONNX at ``path`` its own fixed ``seed`` attribute (``seed``,
    ``seed + 1``, ... in graph order), in place; returns how many there are.

    Without a seed ONNX Runtime draws each session's masks from a random state, so two runs of the
    same volume would give different uncertainty maps; with one, a fresh session repeats its draws.
    """
    import onnx
    from onnx import helper

    path = Path(path)
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == "Dropout" and n.domain in ("", "ai.onnx")]
    for i, node in enumerate(nodes):
        kept = [a for a in node.attribute if a.name != "seed"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("seed", seed + i)])
    onnx.save(model, str(path))
    return len(nodes)


@contextlib.contextmanager
def _quiet_below_debug(*names: str):
    """Raise the named libraries' loggers to WARNING (they log every graph rewrite at INFO) unless
    this module logs at DEBUG."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    if not log.isEnabledFor(logging.DEBUG):
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _forward_arg_names(model: torch.nn.Module) -> list[str]:
    import inspect

    return [n for n in inspect.signature(model.forward).parameters if n != "self"]


#: Opset 17 is the first with a native LayerNormalization (TensorRT imports it as one normalisation layer).
MIN_OPSET = 17


def check_opset(opset: int) -> int:
    from tpem_seg.export.errors import ExportError

    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: opset {MIN_OPSET}+ keeps LayerNormalization native; "
                          f"use --opset {DEFAULT_OPSET}")
    return opset


def check_onnx(path: str | Path, in_channels: int, classes: int, tile: tuple[int, int, int]) -> None:
    """``onnx.checker`` (full, with shape inference) plus this project's I/O contract.

    The contract: one input ``input`` of shape ``(batch, in_channels, *tile)`` with a symbolic
    batch, one output ``logits`` of shape ``(batch, classes, *tile)``, both float32.
    """
    import onnx

    from tpem_seg.export.errors import ExportError

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the exported ONNX fails onnx.checker ({str(err).splitlines()[0]}); "
                          f"report this with the checkpoint's architecture") from err
    model = onnx.load(str(path), load_external_data=False)
    expected = {INPUT_NAME: (in_channels, *tile), OUTPUT_NAME: (classes, *tile)}
    for value in (*model.graph.input, *model.graph.output):
        if value.name not in expected:
            raise ExportError(f"the exported ONNX has an unexpected tensor {value.name!r}; re-export")
        dims = value.type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims[1:])
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or not dims[0].dim_param \
                or shape != expected[value.name]:
            raise ExportError(f"the exported ONNX tensor {value.name} is {[d.dim_param or d.dim_value for d in dims]}"
                              f", expected [batch, {', '.join(map(str, expected[value.name]))}] float32")


def onnx_opset(path: str | Path) -> int:
    """The default-domain opset the ONNX file at ``path`` declares."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))


def simplifier_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxslim") is not None


def simplify_onnx(path: str | Path) -> Path:
    """Rewrite the ONNX at ``path`` with onnxslim (constant folding, dead-node removal), in place.

    The exporter already runs onnxscript's optimizer; on MONAI's UNETR onnxslim finds nothing more,
    so this is opt-in (``--simplify``). Parity runs on the simplified file.
    """
    import onnx

    from tpem_seg.export.errors import ExportError

    if not simplifier_available():
        raise ExportError("--simplify needs onnxslim: pip install 'tpem-seg[simplify]' (or drop --simplify)")
    import onnxslim

    path = Path(path)
    before = onnx.load(str(path))
    slim = onnxslim.slim(before)
    log.info("onnxslim: %d -> %d nodes", len(before.graph.node), len(slim.graph.node))
    onnx.save(slim, str(path))
    return path


INSTANCE_NORM_MODES = ("decomposed", "native")


def decompose_instance_norm(path: str | Path) -> int:
    """Replace every 5D ``InstanceNormalization`` in the ONNX at ``path`` by an accurate decomposition;
    returns how many were replaced.

    ONNX Runtime's CPU InstanceNormalization accumulates each channel's statistics over all
    ``D*H*W`` voxels in float32: at 128^3 its output is off by ~2e-4 (PyTorch: ~1e-6, against
    float64), enough to break 1e-4 probability parity for the reference UNETR. The replacement
    takes the mean hierarchically (over W, then H, then D: each ReduceMean sums at most one
    axis) and the variance in two passes, ``mean((x - mean)^2)``, giving ~1e-6 again. Nodes are
    named ``<original>/instance_norm/...`` so a TensorRT FP16 build holds them in FP32.
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    ranks = _tensor_ranks(model)
    opset = max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
    graph, replaced, nodes = model.graph, 0, []
    for node in graph.node:
        if node.op_type == "InstanceNormalization" and node.domain in ("", "ai.onnx") \
                and ranks.get(node.input[0]) == 5:
            nodes += _instance_norm_nodes(node, opset, graph)
            replaced += 1
        else:
            nodes.append(node)
    if replaced:
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    log.info("decomposed %d InstanceNormalization node(s)", replaced)
    return replaced


def _tensor_ranks(model) -> dict[str, int]:
    """Rank of every tensor whose shape ONNX shape inference knows."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    values = (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}


def _instance_norm_nodes(node, opset: int, graph) -> list:
    """``y = (x - mean) / sqrt(var + eps) * scale + bias`` per (sample, channel), for x of shape (N, C, D, H, W)."""
    import numpy as np
    from onnx import helper, numpy_helper

    x, scale, bias = node.input
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    prefix = f"{node.name or node.output[0]}/instance_norm"
    const = {}

    def constant(name: str, value: np.ndarray) -> str:
        full = f"{prefix}/{name}"
        graph.initializer.append(numpy_helper.from_array(value, full))
        const[name] = full
        return full

    def reduce_mean(inp: str, axis: int, out: str):
        if opset >= 18:
            return helper.make_node("ReduceMean", [inp, constant(f"axis{axis}_{out}", np.array([axis], np.int64))],
                                    [f"{prefix}/{out}"], keepdims=1, name=f"{prefix}/{out}")
        return helper.make_node("ReduceMean", [inp], [f"{prefix}/{out}"], axes=[axis], keepdims=1,
                                name=f"{prefix}/{out}")

    def op(kind: str, inputs: list[str], out: str):
        return helper.make_node(kind, inputs, [f"{prefix}/{out}"], name=f"{prefix}/{out}")

    p = f"{prefix}/"
    channel_axes = constant("channel_axes", np.array([0, 2, 3, 4], np.int64))
    return [
        reduce_mean(x, -1, "mean_w"), reduce_mean(p + "mean_w", -2, "mean_hw"), reduce_mean(p + "mean_hw", -3, "mean"),
        op("Sub", [x, p + "mean"], "centred"), op("Mul", [p + "centred", p + "centred"], "squared"),
        reduce_mean(p + "squared", -1, "var_w"), reduce_mean(p + "var_w", -2, "var_hw"),
        reduce_mean(p + "var_hw", -3, "var"),
        op("Add", [p + "var", constant("epsilon", np.array(eps, np.float32))], "var_eps"),
        op("Sqrt", [p + "var_eps"], "std"), op("Div", [p + "centred", p + "std"], "normalised"),
        op("Unsqueeze", [scale, channel_axes], "scale"), op("Unsqueeze", [bias, channel_axes], "bias"),
        op("Mul", [p + "normalised", p + "scale"], "scaled"),
        helper.make_node("Add", [p + "scaled", p + "bias"], [node.output[0]], name=f"{prefix}/out"),
    ]
