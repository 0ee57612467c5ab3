"""Masked-image-modelling pretraining of the UNETR encoder, top to bottom (nanoGPT style).

    tpem-seg train pretrain --config configs/pretrain_vesselnn.yaml --masking intensity
    torchrun --nproc_per_node 4 -m tpem_seg.cli train pretrain --config ... --device cuda

Each step draws ``batch_size * grad_accum`` random patches per process, masks them
(:mod:`tpem_seg.train.masking`), reconstructs them (:class:`~tpem_seg.train.mim.MIMModel`)
and minimises the L1 error on the masked voxels. Checkpoints (``OUT/last.pt``, kind
``pretrain``) carry the config, so ``--resume`` continues a run where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tpem_seg.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tpem_seg.train import engine
from tpem_seg.train.config import PretrainConfig, to_dict
from tpem_seg.train.data import PatchSampler, TrainVolume, load_volumes, simulated_volumes
from tpem_seg.train.masking import make_masks, upsample_mask
from tpem_seg.train.mim import MIMModel, choose_mask_space, masked_l1
from tpem_seg.util.provenance import process_command, source_commit

log = logging.getLogger(__name__)


def pretrain(config: PretrainConfig, volumes: Sequence[TrainVolume] = ()) -> Path:
    """Run MIM pretraining; returns the path of the final checkpoint (``OUT/last.pt``).

    ``volumes``: in-memory volumes (:func:`~tpem_seg.train.data.array_volume`) used besides
    those the config lists.
    """
    config.check(len(volumes))
    dist = engine.setup_distributed(config.device, config.threads)
    try:
        return _pretrain(config, dist, volumes)
    finally:
        engine.cleanup_distributed()


def _pretrain(config: PretrainConfig, dist: engine.DistInfo, in_memory: Sequence[TrainVolume]) -> Path:
    out = Path(config.out)
    model_config = config.model_config()
    tile = model_config.tile
    mask_space = choose_mask_space(config.mask_space, config.masking, config.mask_patch)

    # data: every process holds all volumes and draws its own patches
    volumes = load_training_volumes(config, tile) + list(in_memory)
    rng = engine.data_rng(config.seed, dist.rank)
    sampler = PatchSampler(volumes, tile, rng, augment=config.augment)

    # model and optimiser; the same seed on every rank gives the same initial weights
    engine.seed_everything(config.seed)
    model = MIMModel(model_config, mask_space).to(dist.device)
    engine.freeze_unused(model)
    optimizer = torch.optim.AdamW(engine.param_groups(model, config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.95))
    precision = engine.precision_for(dist.device, config.amp)
    start = resume_state(out / "last.pt", model, optimizer, precision) if config.resume else 0
    ddp_model = engine.wrap_ddp(model, dist)
    if dist.is_main:
        log.info("pretraining %s (%s encoder, %.2fM parameters) on %d volume(s): %s masking, ratio %.2f, "
                 "mask patch %s in %s space, %d steps of %d patches (batch) x %d "
                 "(accumulation) x %d (processes)",
                 config.model, "x".join(map(str, tile)), sum(p.numel() for p in model.parameters()) / 1e6,
                 len(volumes), config.masking, config.mask_ratio, "x".join(map(str, config.mask_patch)),
                 mask_space, config.steps, config.batch_size, config.grad_accum, dist.world_size)

    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="pretrain", unit="step",
               disable=not (config.progress and dist.is_main))
    steplog = engine.StepLog(config, dist, bar)
    ddp_model.train()

    def micro_loss():
        x, mask, valid = engine.move(masked_batch(sampler, config), dist.device)
        return masked_l1(ddp_model(x, mask).float(), x, mask, valid)

    for step in bar:
        lr, loss = engine.train_step(step, config, ddp_model, model, optimizer, precision, dist, micro_loss)
        steplog.add(step, lr, loss)
        if dist.is_main and config.save_every and (step + 1) % config.save_every == 0 and step + 1 < config.steps:
            save(out / "last.pt", model, optimizer, precision, config, volumes, step + 1, steplog.last_loss, mask_space)
    bar.close()
    engine.check_in_sync(model, dist)
    path = out / "last.pt"
    if dist.is_main:
        save(path, model, optimizer, precision, config, volumes, config.steps, steplog.last_loss, mask_space)
        log.info("pretraining done: masked L1 %.4f; checkpoint %s", steplog.last_loss, path)
    engine.barrier(dist)
    return path


def load_training_volumes(config: PretrainConfig, tile) -> list[TrainVolume]:
    """The unlabelled volumes: files listed under ``train`` and ``simulated.count`` simulated ones."""
    volumes = load_volumes(config.train, tile, config.normalization, config.in_channels)
    volumes += simulated_volumes(config.simulated, tile, config.normalization, config.in_channels)
    return volumes


def masked_batch(sampler: PatchSampler, config: PretrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch ``x (N, C, D, H, W)`` float32, its voxel mask (same shape, bool) and ``valid (N, D, H, W)``."""
    batch = sampler.batch(config.batch_size)
    grid_mask = make_masks(config.masking, batch.image, config.mask_patch, config.mask_ratio, sampler.rng,
                           config.channel_draw, config.intensity_sharpness, config.intensity_floor)
    return batch.image, upsample_mask(grid_mask, config.mask_patch), batch.valid


def save(path: Path, model: MIMModel, optimizer, precision: engine.Precision, config: PretrainConfig,
         volumes: list[TrainVolume], step: int, loss: float, mask_space: str) -> None:
    """A ``pretrain`` checkpoint: MIM weights, config, provenance, and the state to resume."""
    meta = {
        "channels": volume_channel_names(volumes, config.in_channels),
        "classes": [],
        "spacing": None,
        "normalization": config.normalization.to_dict(),
        "train_config": to_dict(config),
        "mask_space": mask_space,
        "command": process_command(),
        "commit": source_commit(),
        "data": [v.name for v in volumes],
        "metrics": {"masked_l1": loss},
    }
    extra = {"optimizer": optimizer.state_dict(), "scaler": precision.scaler.state_dict(), "step": step}
    save_checkpoint(path, Checkpoint("pretrain", model.config, model.state_dict(), meta, extra))


def resume_state(path: Path, model: torch.nn.Module, optimizer, precision: engine.Precision) -> int:
    """Load weights, optimiser and scaler from ``path`` if it exists; the step to continue from."""
    if not path.is_file():
        log.info("no checkpoint at %s to resume; starting from step 0", path)
        return 0
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt.model)
    if "optimizer" in ckpt.extra:
        optimizer.load_state_dict(ckpt.extra["optimizer"])
    if "scaler" in ckpt.extra:
        precision.scaler.load_state_dict(ckpt.extra["scaler"])
    step = int(ckpt.extra.get("step", 0))
    log.info("resumed %s at step %d", path, step)
    return step


def volume_channel_names(volumes: list[TrainVolume], n: int) -> list[str]:
    """Channel names of the first volume that has them (picked channels), else ``ch0..``."""
    for v in volumes:
        names = v.source.channel_names
        if names:
            picked = [names[i] for i in v.channels] if v.channels is not None else list(names)
            if len(picked) == n:
                return picked
    return [f"ch{i}" for i in range(n)]
