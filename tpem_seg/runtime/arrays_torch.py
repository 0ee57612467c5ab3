"""The stitch loop's array operations on torch tensors on a device (see :mod:`~tpem_seg.runtime.arrays`).

This module imports torch: the runtime imports it only for backends that already compute with torch
(the GPU path).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class TorchOps:
    """Array operations on ``float32`` torch tensors on ``device`` (a GPU, or the CPU in tests)."""

    name = "torch"

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def zeros(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.zeros(tuple(shape), dtype=torch.float32, device=self.device)

    def scratch(self, shape: Sequence[int]) -> None:
        return None  # addcmul_ and add_(alpha=) are fused: no temporary needed

    def asarray(self, x) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        return torch.as_tensor(x, device=self.device)

    def add_weighted(self, view: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor, scratch: None) -> None:
        view.addcmul_(logits, weights)

    def add_scaled(self, view: torch.Tensor, weights: torch.Tensor, value: float, scratch: None) -> None:
        view.add_(weights, alpha=float(value))

    def copy(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def shift_planes(self, buffer: torch.Tensor, n: int) -> None:
        keep = buffer.shape[-3] - n
        if keep:
            # torch does not promise overlapping copies: go through a temporary (kept planes only).
            buffer[..., :keep, :, :] = buffer[..., n:, :, :].clone()
        buffer[..., keep:, :, :] = 0.0

    def divide_(self, sums: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        return sums / norm

    def argmax(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.argmax(dim=0)

    def take(self, scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.gather(scores, 0, index[None])[0]

    def where(self, condition: torch.Tensor, a: torch.Tensor, b: int) -> torch.Tensor:
        return torch.where(condition, a, torch.full_like(a, b))

    def sigmoid(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=0)

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.uint8)

    def to_float16(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float16)

    def to_float32(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def flip(self, x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
        return torch.flip(x, tuple(axes))

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.cpu().numpy()
