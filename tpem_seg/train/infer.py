"""Sliding-window prediction of a torch model during training, on the runtime's own tiling path.

Validation and evaluation must see what users get from ``tpem-seg run``: the same
whole-volume normaliser, tile plan, padding, Gaussian blending, stitch loop and output head
(:mod:`tpem_seg.runtime.engine`). Only the network differs: the in-memory torch model instead of
a package, which would cost an ONNX export (seconds) at every validation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from tpem_seg.io import Volume
from tpem_seg.runtime.engine import RunState, TileEngine
from tpem_seg.runtime.normalize import Normalizer
from tpem_seg.runtime.pipeline import make_plan
from tpem_seg.runtime.settings import TileOptions


@torch.inference_mode()
def predict(model: torch.nn.Module, volume: Volume, normalizer: Normalizer, tile: Sequence[int],
            n_classes: int, output: str = "logits", channels: Sequence[int] | None = None, overlap: float = 0.25,
            batch_size: int = 2, device: torch.device | str = "cpu", progress: bool = False,
            autocast_dtype: torch.dtype | None = None, activation: str = "softmax") -> np.ndarray:
    """Blended logits ``(K, Z, Y, X)`` float32 (``output="logits"``) or labels ``(Z, Y, X)`` uint8 of
    ``volume`` (raw intensities, any size), as the runtime makes them.

    The model is put in eval mode and left there; the caller switches back to train().
    """
    model.eval()
    device = torch.device(device)

    def infer(tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(tiles).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x)
        return logits.float().cpu().numpy()

    plan = make_plan(volume.shape_zyx, tile, overlap)
    engine = TileEngine(infer, plan.tile, n_classes, activation, TileOptions(overlap=overlap), batch_size)
    out = np.empty(plan.shape if output == "labels" else (n_classes, *plan.shape),
                   dtype=np.uint8 if output == "labels" else np.float32)

    def store(first: int, block: np.ndarray) -> None:
        out[..., first:first + block.shape[-3], :, :] = block

    engine.run(volume, plan, normalizer, channels, output, store, RunState(), progress)
    return out


def predict_logits(model: torch.nn.Module, volume: Volume, normalizer: Normalizer, tile: Sequence[int],
                   n_classes: int, **kwargs) -> np.ndarray:
    """Blended logits ``(K, Z, Y, X)`` float32 of ``volume`` (see :func:`predict`)."""
    return predict(model, volume, normalizer, tile, n_classes, output="logits", **kwargs)


def predict_labels(model: torch.nn.Module, volume: Volume, normalizer: Normalizer, tile: Sequence[int],
                   n_classes: int, **kwargs) -> np.ndarray:
    """Class indices ``(Z, Y, X)`` uint8, by the runtime's output head (softmax unless ``activation``)."""
    return predict(model, volume, normalizer, tile, n_classes, output="labels", **kwargs)
