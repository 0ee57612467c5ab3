"""PyTorch network -> ONNX with a dynamic batch axis and a fixed spatial tile."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: torch.nn.Module, path: str | Path, in_channels: int, tile: tuple[int, int, int],
                opset: int = DEFAULT_OPSET, max_batch: int = 256) -> Path:
    """Write ``model`` as ONNX at ``path``: input ``(N, in_channels, *tile)`` float32 -> logits.

    Uses the ``torch.export`` based exporter (opset >= 18 keeps LayerNormalization
    native); the batch axis is dynamic from 1 to ``max_batch``.
    """
    path = Path(path)
    model = model.eval().cpu()
    example = torch.zeros(2, in_channels, *tile)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    arg_name = next(iter(_forward_arg_names(model)))
    # The exporter narrates each stage on stdout; keep library output to logging.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as chatter:
        warnings.simplefilter("ignore", category=FutureWarning)
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={arg_name: {0: batch}}, optimize=True)
    log.debug("torch.onnx.export: %s", chatter.getvalue().strip())
    program.save(str(path), external_data=False)
    return path


def _forward_arg_names(model: torch.nn.Module) -> list[str]:
    import inspect

    return [n for n in inspect.signature(model.forward).parameters if n != "self"]
