"""MONAI UNETR construction from a :class:`~tpem_seg.models.config.UNETRConfig` (imports torch and MONAI)."""

from __future__ import annotations

import torch
from monai.networks.nets import UNETR

from tpem_seg.models.config import UNETRConfig, unetr_kwargs


def build_unetr(config: UNETRConfig) -> torch.nn.Module:
    """A MONAI ``UNETR`` for ``config``, random weights, eval mode off (training default)."""
    kwargs = unetr_kwargs(config)
    kwargs["img_size"] = tuple(kwargs["img_size"])
    return UNETR(**kwargs)

