"""The masked-image-modelling network: the UNETR's own ViT encoder plus a light reconstruction head.

SimMIM style: the encoder sees the whole patch with the masked parts replaced, and a
single linear layer predicts the voxels of every token back; the L1 loss counts
masked voxels only. Two ways to replace the masked parts:

- ``token``: masked ViT tokens are swapped for a learnable mask token after the patch
  embedding (SimMIM). Needs mask patches that cover whole 16^3 tokens, and one mask
  for all channels (a token mixes the channels).
- ``input``: masked voxels are set to a learnable value per channel before the patch
  embedding. Works for any mask patch and for per-channel (channel-separated) masks.

The encoder is built by :func:`tpem_seg.models.unetr.build_unetr` and kept as
``self.vit``, so its state-dict keys (``vit.*``) are exactly the UNETR's and
fine-tuning loads them one to one.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from tpem_seg.models.config import PATCH, UNETRConfig
from tpem_seg.models.unetr import build_unetr

MASK_SPACES = ("token", "input")


def choose_mask_space(requested: str, strategy: str, mask_patch: Sequence[int]) -> str:
    """``token`` where the masks allow it (shared over channels, whole tokens), else ``input``."""
    whole_tokens = all(int(p) % PATCH == 0 for p in mask_patch)
    if requested == "auto":
        return "token" if whole_tokens and strategy != "channel" else "input"
    if requested == "token" and not whole_tokens:
        raise ValueError(f"token masking needs mask patches that are multiples of {PATCH}, got {tuple(mask_patch)}")
    if requested == "token" and strategy == "channel":
        raise ValueError("channel-separated masks need mask_space 'input' (a ViT token mixes the channels)")
    return requested


class MIMModel(nn.Module):
    """UNETR ViT encoder + linear voxel head for masked reconstruction.

    Args:
        config: the UNETR config whose encoder is pretrained (``tile`` is the input size).
        mask_space: ``token`` or ``input`` (see the module docstring).
    """

    def __init__(self, config: UNETRConfig, mask_space: str = "token"):
        super().__init__()
        if mask_space not in MASK_SPACES:
            raise ValueError(f"mask_space {mask_space!r} must be one of {MASK_SPACES}")
        self.config = config
        self.mask_space = mask_space
        self.vit = build_unetr(config).vit  # the rest of the UNETR is dropped
        c, h = config.in_channels, config.hidden_size
        if mask_space == "token":
            self.mask_token = nn.Parameter(torch.zeros(1, 1, h))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        else:
            self.mask_value = nn.Parameter(torch.zeros(c))
        self.head = nn.Linear(h, c * PATCH ** 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x (N, C, D, H, W)`` from its unmasked part; ``mask`` is a bool voxel mask of the
        same shape (True = hidden). Returns ``(N, C, D, H, W)`` predictions for every voxel."""
        return self.decode(self.encode(x, mask))

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder tokens ``(N, L, hidden)`` of the masked input, ``L = D*H*W / 16^3``."""
        if self.mask_space == "input":
            filled = self.mask_value.view(1, -1, 1, 1, 1).to(x.dtype).expand_as(x)
            return self.vit(torch.where(mask, filled, x))[0]
        return self._encode_tokens(x, self.token_mask(mask))

    def token_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Voxel mask ``(N, C, D, H, W)`` -> token mask ``(N, L)`` (a token is masked if any voxel is),
        in the raster order of the patch embedding's flattened grid."""
        n = mask.shape[0]
        gd, gh, gw = (s // PATCH for s in mask.shape[2:])
        blocks = mask[:, 0].reshape(n, gd, PATCH, gh, PATCH, gw, PATCH)
        return blocks.any(dim=6).any(dim=4).any(dim=2).reshape(n, gd * gh * gw)

    def _encode_tokens(self, x: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """MONAI's ``ViT.forward`` with masked tokens swapped in before the position embedding."""
        embed = self.vit.patch_embedding
        tokens = embed.patch_embeddings(x)
        if tokens.ndim == 5:  # conv projection: (N, hidden, gd, gh, gw) -> (N, L, hidden)
            tokens = tokens.flatten(2).transpose(-1, -2)
        w = token_mask.unsqueeze(-1).to(tokens.dtype)
        tokens = tokens * (1 - w) + self.mask_token.to(tokens.dtype) * w
        tokens = embed.dropout(tokens + embed.position_embeddings)
        for block in self.vit.blocks:
            tokens = block(tokens)
        return self.vit.norm(tokens)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(N, L, hidden)`` -> voxels ``(N, C, D, H, W)`` (a 3D pixel shuffle of the head's output)."""
        n = tokens.shape[0]
        c = self.config.in_channels
        gd, gh, gw = self.config.patch_grid
        out = self.head(tokens).reshape(n, gd, gh, gw, c, PATCH, PATCH, PATCH)
        out = out.permute(0, 4, 1, 5, 2, 6, 3, 7)
        return out.reshape(n, c, gd * PATCH, gh * PATCH, gw * PATCH)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error over masked voxels only.

    ``pred``, ``target``: ``(N, C, D, H, W)``; ``mask``: bool, same shape (True = masked);
    ``valid``: optional bool ``(N, D, H, W)``, False on padding, which never counts.
    Unmasked voxels get zero weight, so the loss and its gradient ignore them.
    """
    weight = mask if valid is None else mask & valid.unsqueeze(1)
    weight = weight.to(pred.dtype)
    return ((pred - target).abs() * weight).sum() / weight.sum().clamp(min=1.0)
