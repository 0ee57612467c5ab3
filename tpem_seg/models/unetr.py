"""MONAI UNETR construction from a :class:`~tpem_seg.models.config.UNETRConfig` (imports torch and MONAI)."""

from __future__ import annotations

import torch
from monai.networks.nets import UNETR

from tpem_seg.models.config import UNETRConfig


def build_unetr(config: UNETRConfig) -> torch.nn.Module:
    """A MONAI ``UNETR`` for ``config``, random weights, eval mode off (training default)."""
    return UNETR(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        img_size=config.tile,
        feature_size=config.feature_size,
        hidden_size=config.hidden_size,
        mlp_dim=config.mlp_dim,
        num_heads=config.num_heads,
        proj_type=config.proj_type,
        norm_name=config.norm_name,
        conv_block=config.conv_block,
        res_block=config.res_block,
        dropout_rate=config.dropout_rate,
        spatial_dims=3,
        qkv_bias=config.qkv_bias,
    )
