"""Sliding-window prediction of a torch model during training, on the runtime's own tiling path.

Validation and evaluation must see what users get from ``tpem-seg run``: the same
whole-volume normaliser, tile plan, padding, Gaussian blending and stitcher
(:mod:`tpem_seg.runtime.pipeline`, :mod:`tpem_seg.runtime.stitch`). Only the backend
differs: the in-memory torch model instead of a package, which would cost an ONNX
export (seconds) at every validation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tpem_seg.io import Volume
from tpem_seg.runtime.normalize import Normalizer
from tpem_seg.runtime.pipeline import RowDone, TileBatch, iter_tiles, make_plan
from tpem_seg.runtime.stitch import Stitcher
from tpem_seg.runtime.tiling import gaussian_weights


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, volume: Volume, normalizer: Normalizer, tile: Sequence[int],
                   n_classes: int, channels: Sequence[int] | None = None, overlap: float = 0.25,
                   batch_size: int = 2, device: torch.device | str = "cpu", progress: bool = False,
                   autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    """Blended logits ``(K, Z, Y, X)`` float32 of ``volume`` (raw intensities, any size).

    The model is put in eval mode and left there; the caller switches back to train().
    """
    model.eval()
    device = torch.device(device)
    plan = make_plan(volume.shape_zyx, tile, overlap)
    stitcher = Stitcher(n_classes, plan.padded, plan.tile, gaussian_weights(plan.tile))
    out = np.empty((n_classes, *plan.shape), dtype=np.float32)
    with tqdm(total=plan.n_tiles, unit="tile", desc="predict", disable=not progress, leave=False) as bar:
        for item in iter_tiles(volume, plan, normalizer, channels, batch_size):
            if isinstance(item, TileBatch):
                x = torch.from_numpy(item.tiles).to(device)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    logits = model(x)
                stitcher.add(logits.float().cpu().numpy(), item.origins)
                bar.update(len(item.origins))
                continue
            assert isinstance(item, RowDone)
            finished = stitcher.advance(item.next_z)
            if finished is None:
                continue
            z0, block = finished
            part = plan.volume_part(z0, block.shape[1])
            if part is not None:
                first, crop = part
                out[:, first:first + crop[0].stop - crop[0].start] = block[(slice(None), *crop)]
    return out


def predict_labels(model: torch.nn.Module, volume: Volume, normalizer: Normalizer, tile: Sequence[int],
                   n_classes: int, **kwargs) -> np.ndarray:
    """Class indices ``(Z, Y, X)`` uint8: the argmax of :func:`predict_logits`."""
    return predict_logits(model, volume, normalizer, tile, n_classes, **kwargs).argmax(axis=0).astype(np.uint8)
