"""Assemble a model package from a PyTorch network: ONNX, weights, manifest."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from tpem_seg.export.onnx import (DEFAULT_OPSET, MC_DROPOUT_FILE, decompose_instance_norm, export_dropout_onnx,
                                  export_onnx)
from tpem_seg.models.manifest import Manifest
from tpem_seg.models.package import ModelPackage, write_package

log = logging.getLogger(__name__)


def package_from_model(model: torch.nn.Module, manifest: Manifest, dst: str | Path,
                       include_weights: bool = True, opset: int = DEFAULT_OPSET,
                       overwrite: bool = False, instance_norm: str = "decomposed") -> ModelPackage:
    """Export ``model`` (whose config is ``manifest.config``) to a package folder ``dst``, without parity
    (``tpem-seg export`` / :func:`tpem_seg.export.exporter.export_package` add it).

    ``instance_norm="decomposed"`` rewrites InstanceNormalization for accuracy in ONNX Runtime
    (:func:`~tpem_seg.export.onnx.decompose_instance_norm`); ``"native"`` keeps the ONNX op.
    """
    config = manifest.config
    manifest.onnx_opset = opset
    manifest.weights_file = "model.pt" if include_weights else None
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", config.in_channels, config.tile, opset=opset)
        if instance_norm == "decomposed":
            decompose_instance_norm(onnx_path)
        files: dict[str, Path] = {"model.onnx": onnx_path}
        if config.dropout_rate > 0:
            files[MC_DROPOUT_FILE] = export_dropout_onnx(model, Path(tmp) / MC_DROPOUT_FILE, config, opset,
                                                         instance_norm)
            manifest.mc_dropout_file = MC_DROPOUT_FILE
        if include_weights:
            weights = Path(tmp) / "model.pt"
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
            files["model.pt"] = weights
        return write_package(dst, manifest, files, overwrite=overwrite)
