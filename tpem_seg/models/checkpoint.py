"""Training checkpoints that carry the config needed to rebuild the model (nanoGPT style).

A checkpoint is a ``torch.save`` dict::

    {"format": "tpem-seg-checkpoint", "version": 1,
     "kind": "pretrain" | "finetune",
     "config": UNETRConfig.to_dict(),          # rebuilds the network
     "model": state_dict,                       # of the UNETR ("finetune") or the MIM model ("pretrain")
     "meta": {"channels": [...], "classes": [...], "spacing": [z, y, x] | None,
              "normalization": NormalizationSpec.to_dict(), "train_config": {...}, "command": "...",
              "commit": "...", "data": [...], "metrics": {...}},
     "optimizer": ..., "scheduler": ..., "step": int, "epoch": int}   # for resuming; optional

torch is imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tpem_seg.errors import TpemSegError
from tpem_seg.models.config import UNETRConfig
from tpem_seg.util.atomic import atomic_path

FORMAT = "tpem-seg-checkpoint"
VERSION = 1
KINDS = ("pretrain", "finetune")
#: Prefixes wrappers leave on state-dict keys: DataParallel/DDP (``module.``), torch.compile (``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Checkpoint:
    """A loaded checkpoint: what it is, how to rebuild the network, and the weights."""

    kind: str
    config: UNETRConfig
    model: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # optimizer, scheduler, step, epoch...

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "config": self.config.to_dict(),
                "model": self.model, "meta": self.meta, **self.extra}


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write atomically (temporary name, then rename) so a crash never leaves half a checkpoint."""
    import torch

    if checkpoint.kind not in KINDS:
        raise ValueError(f"checkpoint kind {checkpoint.kind!r} must be one of {KINDS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(checkpoint.to_dict(), tmp)
    return path


def read_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (no code runs from the file).

    Raises TpemSegError naming the path and the fix when it is missing or not a PyTorch file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise TpemSegError(f"no such checkpoint: {path}; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file it cannot read; all mean the same here
        raise TpemSegError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}); check the file") from err


def clean_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """The bare state dict of a saved network: unwrap ``{"state_dict"|"model"|"model_state_dict": ...}``
    and strip every :data:`WRAPPER_PREFIXES` prefix from the keys (``module._orig_mod.vit.x`` -> ``vit.x``)."""
    for key in ("state_dict", "model", "model_state_dict"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    cleaned = {}
    for name, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix):], True
        cleaned[name] = value
    return cleaned


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a tpem-seg checkpoint; raise TpemSegError with the fix if it is something else."""
    data = read_torch_file(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TpemSegError(f"{path} is not a tpem-seg checkpoint; for a plain MONAI UNETR state dict pass "
                           f"its architecture on the command line (e.g. --arch unetr --in-channels 2 ...)")
    extra = {k: v for k, v in data.items() if k not in ("format", "version", "kind", "config", "model", "meta")}
    return Checkpoint(kind=data["kind"], config=UNETRConfig.from_dict(data["config"]), model=data["model"],
                      meta=data.get("meta", {}), extra=extra)
