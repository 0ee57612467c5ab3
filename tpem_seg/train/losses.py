"""Segmentation loss: soft Dice plus cross-entropy, skipping unannotated voxels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tpem_seg.train.data import IGNORE


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 smooth: float = 1e-5) -> torch.Tensor:
    """``dice_weight * (1 - soft Dice) + ce_weight * cross-entropy``.

    ``logits``: ``(N, K, D, H, W)``; ``labels``: ``(N, D, H, W)`` int64 class indices, with
    :data:`~tpem_seg.train.data.IGNORE` where a voxel is unannotated (or padding); those
    voxels count in neither term. The Dice is the batch Dice (sums over the whole batch,
    as nnU-Net) averaged over the foreground classes 1..K-1; a class absent from both the
    prediction and the batch scores 1.
    """
    valid = labels != IGNORE
    n_classes = logits.shape[1]
    if not bool(valid.any()):
        return logits.sum() * 0.0  # keeps the graph (DDP needs every parameter used) with a zero loss
    ce = F.cross_entropy(logits.float(), labels.masked_fill(~valid, IGNORE), ignore_index=IGNORE)
    probs = torch.softmax(logits.float(), dim=1)
    weight = valid.unsqueeze(1).to(probs.dtype)
    target = F.one_hot(labels.masked_fill(~valid, 0), n_classes).permute(0, 4, 1, 2, 3).to(probs.dtype)
    dims = (0, 2, 3, 4)
    intersection = (probs * target * weight).sum(dims)
    denominator = (probs * weight).sum(dims) + (target * weight).sum(dims)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    foreground = dice[1:] if n_classes > 1 else dice
    return dice_weight * (1.0 - foreground.mean()) + ce_weight * ce
