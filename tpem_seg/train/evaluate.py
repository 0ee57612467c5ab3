"""Score a fine-tuned checkpoint on labelled volumes: Dice per class, clDice for vessels.

    tpem-seg train evaluate --checkpoint runs/finetune/best.pt --volume IMG.tif=LABELS.tif

Each volume is segmented by sliding window on the runtime's tiling path with the
checkpoint's own normalisation, so the numbers are those ``tpem-seg run`` would give.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tpem_seg.errors import TpemSegError
from tpem_seg.io import Volume, write_volume
from tpem_seg.models.checkpoint import Checkpoint, clean_state_dict, load_checkpoint
from tpem_seg.models.manifest import NormalizationSpec
from tpem_seg.models.unetr import build_unetr
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.train import engine
from tpem_seg.train.config import EvaluateConfig, VolumeSpec
from tpem_seg.train.data import read_labels, read_spec
from tpem_seg.train.infer import predict_labels
from tpem_seg.train.metrics import score

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Scores per volume (``{"dice/vessel": ..., "cldice/vessel": ...}``) and their means."""

    per_volume: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        keys = next(iter(self.per_volume.values()), {}).keys()
        return {k: float(np.mean([m[k] for m in self.per_volume.values()])) for k in keys}

    def to_dict(self) -> dict:
        return {"per_volume": self.per_volume, "mean": self.mean}

    def table(self) -> str:
        """A markdown table: one row per volume, then the mean."""
        keys = list(self.mean)
        rows = ["| volume | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name, m in {**self.per_volume, "mean": self.mean}.items():
            rows.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |")
        return "\n".join(rows)


def load_segmentation_model(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, Checkpoint]:
    """The UNETR of a ``finetune`` checkpoint, on ``device``, in eval mode."""
    ckpt = load_checkpoint(path)
    if ckpt.kind != "finetune":
        raise TpemSegError(f"{path} is a {ckpt.kind} checkpoint; evaluate one from `tpem-seg train finetune`")
    model = build_unetr(ckpt.config)
    model.load_state_dict(clean_state_dict(ckpt.model))
    return model.to(device).eval(), ckpt


def evaluate_checkpoint(model: torch.nn.Module, ckpt: Checkpoint, volumes: Sequence[tuple[str, Volume, np.ndarray,
                        Sequence[int] | None]], device: torch.device, overlap: float = 0.25, batch_size: int = 2,
                        progress: bool = False, save_dir: str | Path | None = None) -> Evaluation:
    """Segment and score each ``(name, volume, labels (Z, Y, X), channels)``."""
    classes = list(ckpt.meta.get("classes") or [f"class{k}" for k in range(ckpt.config.out_channels)])
    spec = NormalizationSpec(**ckpt.meta.get("normalization", {}))
    result = Evaluation()
    for name, volume, labels, channels in volumes:
        normalizer = fit_normalizer(volume, spec, channels)
        pred = predict_labels(model, volume, normalizer, ckpt.config.tile, len(classes), channels=channels,
                              overlap=overlap, batch_size=batch_size, device=device, progress=progress)
        result.per_volume[name] = score(pred, labels, classes)
        log.info("%s: %s", name, "  ".join(f"{k} {v:.4f}" for k, v in result.per_volume[name].items()))
        if save_dir is not None:
            write_volume(Path(save_dir) / f"{name}_labels.tif", pred, axes="ZYX", spacing=volume.spacing)
    return result


def evaluate(config: EvaluateConfig) -> Evaluation:
    """Run :class:`EvaluateConfig`: load, segment, score, and write ``config.out`` (JSON) if set."""
    config.check()
    device = engine.resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    model, ckpt = load_segmentation_model(config.checkpoint, device)
    binary = config.binary_labels if config.binary_labels is not None else bool(ckpt.meta.get("binary_labels", True))
    n_classes = ckpt.config.out_channels
    volumes = [labelled_volume(spec, binary, n_classes) for spec in config.volumes]
    result = evaluate_checkpoint(model, ckpt, volumes, device, config.overlap, config.batch_size, config.progress,
                                 config.save_predictions)
    log.info("mean over %d volume(s): %s", len(volumes), "  ".join(f"{k} {v:.4f}" for k, v in result.mean.items()))
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out).write_text(json.dumps({"checkpoint": config.checkpoint, **result.to_dict()}, indent=2) + "\n")
    return result


def labelled_volume(spec: VolumeSpec, binary: bool, n_classes: int) -> tuple[str, Volume, np.ndarray,
                                                                          list[int] | None]:
    volume = read_spec(spec)
    labels = read_labels(spec.labels, volume.shape_zyx, binary, n_classes)
    return spec.name or Path(spec.image).name, volume, labels, spec.channels
