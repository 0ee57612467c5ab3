"""Fine-tuning a UNETR for segmentation, optionally from a pretrained encoder, top to bottom.

    tpem-seg train finetune --config configs/finetune_vesselnn.yaml --pretrained runs/pretrain/last.pt \
        --label-fraction 0.25

Patches are drawn with foreground oversampling from the annotated share of the
training volumes; the loss is Dice + cross-entropy over annotated voxels. Every
``val_every`` steps the validation volumes are segmented by sliding window on the
runtime's tiling path and scored; the best mean foreground Dice is kept as
``OUT/best.pt`` (kind ``finetune``), the latest as ``OUT/last.pt``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tpem_seg.errors import TpemSegError
from tpem_seg.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tpem_seg.models.config import UNETRConfig
from tpem_seg.models.unetr import build_unetr
from tpem_seg.train import engine
from tpem_seg.train.config import FinetuneConfig, to_dict
from tpem_seg.train.data import PatchSampler, TrainVolume, apply_label_fraction, load_volumes, simulated_volumes
from tpem_seg.train.infer import predict_labels
from tpem_seg.train.losses import dice_ce_loss
from tpem_seg.train.metrics import score
from tpem_seg.train.pretrain import resume_state, volume_channel_names
from tpem_seg.util.provenance import process_command, source_commit

log = logging.getLogger(__name__)


def finetune(config: FinetuneConfig, volumes: Sequence[TrainVolume] = (),
             val_volumes: Sequence[TrainVolume] = ()) -> Path:
    """Run fine-tuning; returns the path of the best checkpoint (``OUT/best.pt``).

    ``volumes``, ``val_volumes``: labelled in-memory volumes (:func:`~tpem_seg.train.data.array_volume`)
    used besides those the config lists.
    """
    config.check(len(volumes))
    dist = engine.setup_distributed(config.device, config.threads)
    try:
        return _finetune(config, dist, volumes, val_volumes)
    finally:
        engine.cleanup_distributed()


def _finetune(config: FinetuneConfig, dist: engine.DistInfo, in_memory: Sequence[TrainVolume],
              in_memory_val: Sequence[TrainVolume]) -> Path:
    out = Path(config.out)
    classes = list(config.classes)
    model_config = config.model_config(out_channels=len(classes))
    tile = model_config.tile

    # data: the label subset depends on the seed only, so every rank trains on the same annotation
    volumes = load_labelled_volumes(config, tile, len(classes)) + list(in_memory)
    volumes = apply_label_fraction(volumes, config.label_fraction, config.label_unit, config.region_size,
                                   np.random.default_rng(config.seed))
    sampler = PatchSampler(volumes, tile, engine.data_rng(config.seed, dist.rank), labelled=True,
                           foreground_prob=config.foreground_prob, augment=config.augment)
    val_volumes = load_volumes(config.val, tile, config.normalization, config.in_channels, config.binary_labels,
                               len(classes), need_labels=True) + list(in_memory_val) if dist.is_main else []

    # model: random init (same on every rank), then the pretrained encoder if given
    engine.seed_everything(config.seed)
    model = build_unetr(model_config)
    if config.pretrained:
        load_pretrained_encoder(model, config.pretrained)
    model.to(dist.device)
    engine.freeze_unused(model)
    optimizer = torch.optim.AdamW(engine.param_groups(model, config.weight_decay, config.encoder_lr_scale),
                                  lr=config.lr)
    precision = engine.precision_for(dist.device, config.amp)
    start = resume_state(out / "last.pt", model, optimizer, precision) if config.resume else 0
    best = previous_best(out / "best.pt") if config.resume else -1.0
    ddp_model = engine.wrap_ddp(model, dist)
    if dist.is_main:
        log.info("fine-tuning %s (%.2fM parameters, %s) on %d volume(s), label fraction %.2f by %s: %d steps of "
                 "%d patches (batch) x %d (accumulation) x %d (processes)", config.model, sum(p.numel() for p in model.parameters()) / 1e6,
                 "pretrained encoder" if config.pretrained else "from scratch", len(volumes), config.label_fraction,
                 config.label_unit, config.steps, config.batch_size, config.grad_accum, dist.world_size)

    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="finetune", unit="step",
               disable=not (config.progress and dist.is_main))
    steplog, metrics = engine.StepLog(config, dist, bar), {}
    ddp_model.train()

    def micro_loss():
        batch = sampler.batch(config.batch_size)
        x, labels = engine.move((batch.image, batch.labels.astype(np.int64)), dist.device)
        return dice_ce_loss(ddp_model(x), labels, config.dice_weight, config.ce_weight)

    for step in bar:
        lr, loss = engine.train_step(step, config, ddp_model, model, optimizer, precision, dist, micro_loss)
        steplog.add(step, lr, loss)

        last_step = step + 1 == config.steps
        if (config.val or in_memory_val) and ((step + 1) % config.val_every == 0 or last_step):
            if dist.is_main:  # the other ranks wait at the barrier
                metrics = validate(model, val_volumes, model_config, classes, config, dist.device)
                if metrics["dice/mean"] > best:
                    best = metrics["dice/mean"]
                    save(out / "best.pt", model, config, volumes, step + 1, steplog.last_loss,
                         {**metrics, "best": best})
                log.info("step %d  validation %s  (best Dice %.4f)", step + 1,
                         "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), best)
            engine.barrier(dist)
            ddp_model.train()
        if dist.is_main and (last_step or (config.save_every and (step + 1) % config.save_every == 0)):
            save(out / "last.pt", model, config, volumes, step + 1, steplog.last_loss, metrics, optimizer, precision)
    bar.close()
    engine.check_in_sync(model, dist)
    best_path = out / "best.pt"
    if dist.is_main and not (config.val or in_memory_val):
        # without validation data the last weights are the only candidate
        save(best_path, model, config, volumes, config.steps, steplog.last_loss, metrics)
        log.info("no validation volumes: best.pt is the last step's weights")
    engine.barrier(dist)
    return best_path


def load_labelled_volumes(config: FinetuneConfig, tile: Sequence[int], n_classes: int) -> list[TrainVolume]:
    """Labelled training volumes from files and, with ``simulated.with_labels``, the simulator."""
    volumes = load_volumes(config.train, tile, config.normalization, config.in_channels, config.binary_labels,
                           n_classes, need_labels=True)
    if config.simulated.count:
        if not config.simulated.with_labels:
            raise TpemSegError("fine-tuning needs labels: set simulated.with_labels = true")
        volumes += simulated_volumes(config.simulated, tile, config.normalization, config.in_channels,
                                     config.binary_labels, n_classes)
    return volumes


def load_pretrained_encoder(model: torch.nn.Module, path: str | Path) -> int:
    """Copy every ViT encoder tensor (``vit.*``) of a ``pretrain`` checkpoint into ``model`` (a UNETR).

    Returns the number of tensors loaded, which is always all of the UNETR's encoder
    tensors: a missing or mis-shaped one raises TpemSegError (the configs differ).
    """
    ckpt = load_checkpoint(path)
    if ckpt.kind != "pretrain":
        raise TpemSegError(f"{path} is a {ckpt.kind} checkpoint; --pretrained needs one from `tpem-seg train pretrain`")
    target = {k: v for k, v in model.state_dict().items() if k.startswith("vit.")}
    source = {k: v for k, v in ckpt.model.items() if k.startswith("vit.")}
    missing = sorted(set(target) - set(source))
    mismatched = sorted(k for k in set(target) & set(source) if target[k].shape != source[k].shape)
    if missing or mismatched:
        raise TpemSegError(f"{path} does not fit this model (missing {missing[:3]}, shape mismatch "
                           f"{mismatched[:3]}); fine-tune with the pretraining's model and in_channels "
                           f"({describe_config(ckpt.config)})")
    result = model.load_state_dict({k: source[k] for k in target}, strict=False)
    if result.unexpected_keys:
        raise TpemSegError(f"unexpected encoder tensors {result.unexpected_keys[:3]} in {path}")
    log.info("loaded %d/%d encoder tensors (%d values) from %s", len(target), len(target),
             sum(v.numel() for v in target.values()), path)
    return len(target)


def describe_config(config: UNETRConfig) -> str:
    return (f"in_channels {config.in_channels}, tile {'x'.join(map(str, config.tile))}, "
            f"hidden {config.hidden_size}")


@torch.no_grad()
def validate(model: torch.nn.Module, volumes: Sequence[TrainVolume], model_config: UNETRConfig,
             classes: list[str], config: FinetuneConfig, device: torch.device) -> dict[str, float]:
    """Sliding-window Dice per class over ``volumes`` (their full labels), and their mean."""
    per_volume = []
    for v in volumes:
        pred = predict_labels(model, v.source, v.normalizer, model_config.tile, len(classes), channels=v.channels,
                              overlap=config.val_overlap, batch_size=config.batch_size, device=device)
        per_volume.append(score(pred, v.raw_labels, classes, with_cldice=False))
    metrics = {k: float(np.mean([m[k] for m in per_volume])) for k in per_volume[0]}
    metrics["dice/mean"] = float(np.mean(list(metrics.values())))
    return metrics


def previous_best(path: Path) -> float:
    if not path.is_file():
        return -1.0
    return float(load_checkpoint(path).meta.get("metrics", {}).get("best", -1.0))


def training_spacing(volumes: Sequence[TrainVolume], configured) -> list[float] | None:
    """The configured voxel size, else the one all training volumes share, else None (they differ)."""
    if configured is not None:
        return [float(s) for s in configured]
    spacings = {tuple(v.source.spacing) if v.source.spacing else None for v in volumes}
    return list(spacings.pop()) if len(spacings) == 1 and None not in spacings else None


def save(path: Path, model: torch.nn.Module, config: FinetuneConfig, volumes: Sequence[TrainVolume], step: int,
         loss: float, metrics: dict, optimizer=None, precision: engine.Precision | None = None) -> None:
    """A ``finetune`` checkpoint: UNETR weights, config, what the runtime needs, provenance; with
    ``optimizer``, also the state to resume."""
    meta = {
        "channels": volume_channel_names(list(volumes), config.in_channels),
        "classes": list(config.classes),
        "spacing": training_spacing(volumes, config.spacing),
        "normalization": config.normalization.to_dict(),
        "binary_labels": config.binary_labels,
        "train_config": to_dict(config),
        "command": process_command(),
        "commit": source_commit(),
        "data": [v.name for v in volumes],
        "metrics": {"loss": loss, **metrics},
    }
    extra: dict = {"step": step}
    if optimizer is not None:
        extra["optimizer"] = optimizer.state_dict()
    if precision is not None:
        extra["scaler"] = precision.scaler.state_dict()
    model_config = config.model_config(out_channels=len(config.classes))
    save_checkpoint(path, Checkpoint("finetune", model_config, engine.unwrap(model).state_dict(), meta, extra))
