"""MONAI UNETR construction and weight loading (imports torch and MONAI)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from monai.networks.nets import UNETR

from tpem_seg.models.registry import UNETRConfig, unetr_kwargs

log = logging.getLogger(__name__)


def build_unetr(config: UNETRConfig) -> torch.nn.Module:
    """A MONAI ``UNETR`` for ``config``, random weights, eval mode off (training default)."""
    kwargs = unetr_kwargs(config)
    kwargs["img_size"] = tuple(kwargs["img_size"])
    return UNETR(**kwargs)


def clean_state_dict(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Strip the ``module.`` prefix that ``DataParallel``/DDP leave, and unwrap ``{"state_dict": ...}``."""
    for key in ("state_dict", "model", "model_state_dict"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
