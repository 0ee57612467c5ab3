"""Training and scoring one arm of the study: a pretraining, a fine-tuning, the test volumes' scores.

The orchestration (:mod:`.run`), the pilot (:mod:`.pilot`) and the diagnostics (:mod:`.diagnostics`)
all build their runs here, so every arm of every table follows the same recipe.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from tpem_seg.train.config import FinetuneConfig, PretrainConfig, SimulatedSpec, VolumeSpec
from tpem_seg.train.study.design import Cell, LabelBudget, StudyConfig
from tpem_seg.train.study.results import Results


def pretrain_config(cfg: StudyConfig, volumes: list[VolumeSpec], masking: str, out: Path, in_channels: int = 1,
                    steps: int | None = None, mask_space: str = "auto", model: str | None = None,
                    simulated: SimulatedSpec | None = None) -> PretrainConfig:
    steps = steps or cfg.pretrain_steps
    return PretrainConfig(model=model or cfg.model, in_channels=in_channels, train=volumes,
                          simulated=simulated or SimulatedSpec(), masking=masking, mask_ratio=cfg.mask_ratio,
                          mask_patch=cfg.mask_patch, mask_space=mask_space, steps=steps,
                          batch_size=cfg.pretrain_batch, lr=cfg.pretrain_lr, warmup_steps=cfg.warmup_steps,
                          device=cfg.device, threads=cfg.threads, seed=0, out=str(out), progress=False,
                          log_every=max(1, steps // 5))


def vessel_pretrain_config(cfg: StudyConfig, train: Sequence[VolumeSpec], masking: str, out: Path,
                           steps: int | None = None) -> PretrainConfig:
    """Pretraining for the real vessels: the fold's training volumes without labels, the extra real
    volumes and the simulated vessel stacks; never a test volume and never a label."""
    unlabelled = [replace(s, labels=None) for s in train] + list(cfg.extra_unlabelled)
    return pretrain_config(cfg, unlabelled, masking, out, steps=steps, simulated=cfg.simulated_unlabelled)


def finetune_config(cfg: StudyConfig, train: list[VolumeSpec], pretrained: str | None, budget: LabelBudget,
                    seed: int, out: Path, **changes) -> FinetuneConfig:
    """The one fine-tuning recipe; a pretrained encoder learns at ``encoder_lr_scale`` times the LR."""
    base = FinetuneConfig(model=cfg.model, in_channels=1, train=train, pretrained=pretrained,
                          label_fraction=budget.fraction, label_unit=budget.unit, region_size=cfg.region_size,
                          steps=cfg.finetune_steps, batch_size=cfg.finetune_batch, lr=cfg.finetune_lr,
                          encoder_lr_scale=cfg.encoder_lr_scale if pretrained else 1.0,
                          warmup_steps=cfg.warmup_steps, device=cfg.device, threads=cfg.threads, seed=seed,
                          out=str(out), progress=False, log_every=max(1, cfg.finetune_steps // 5))
    return replace(base, **changes)


def pretrain_once(pc: PretrainConfig, results: Results, table: str, fold: int) -> str:
    """Pretrain unless a finished checkpoint of the same run exists; record its loss and time."""
    from tpem_seg.models.checkpoint import load_checkpoint
    from tpem_seg.train.pretrain import pretrain

    path = Path(pc.out) / "last.pt"
    key = dict(table=f"{table}-pretrain", fold=fold, arm=pc.masking, seed=pc.seed, steps=pc.steps)
    if path.is_file() and results.has(**key) and load_checkpoint(path).extra.get("step") == pc.steps:
        return str(path)
    started, cpu = time.perf_counter(), time.process_time()
    pretrain(pc)
    loss = load_checkpoint(path).meta["metrics"]["masked_l1"]
    results.add({**key, "masked_l1": loss, "seconds": time.perf_counter() - started,
                 "cpu_seconds": time.process_time() - cpu})
    return str(path)


def finetune_and_score(cfg: StudyConfig, ft: FinetuneConfig, test: list[VolumeSpec], keep: bool = False) -> dict:
    """Fine-tune, segment the test volumes, score them; the checkpoint is removed unless kept."""
    from tpem_seg.train import engine
    from tpem_seg.train.evaluate import evaluate_checkpoint, labelled_volume, load_segmentation_model
    from tpem_seg.train.finetune import finetune

    started, cpu = time.perf_counter(), time.process_time()
    best = finetune(ft)
    trained, trained_cpu = time.perf_counter() - started, time.process_time() - cpu
    device = engine.resolve_device(cfg.device)
    model, ckpt = load_segmentation_model(best, device)
    volumes = [labelled_volume(s, ft.binary_labels, len(ft.classes)) for s in test]
    scores = evaluate_checkpoint(model, ckpt, volumes, device, cfg.eval_overlap, cfg.eval_batch)
    if not (keep or cfg.keep_checkpoints):
        shutil.rmtree(ft.out, ignore_errors=True)  # only the scores matter here; 8-25 MB a run
    # CPU seconds besides wall seconds: on a shared machine they estimate the idle time of a 1-thread run
    return {"per_volume": scores.per_volume, "train_seconds": trained, "train_steps": ft.steps,
            "eval_seconds": time.perf_counter() - started - trained, "train_cpu_seconds": trained_cpu,
            "eval_cpu_seconds": time.process_time() - cpu - trained_cpu}


def fold_split(cfg: StudyConfig, specs: dict[str, VolumeSpec], k: int) -> tuple[list[VolumeSpec], list[VolumeSpec]]:
    """Fold ``k``'s (training, test) volumes."""
    test = cfg.folds[k]
    return [specs[n] for n in specs if n not in test], [specs[n] for n in test]


def finetune_dir(cfg: StudyConfig, fold: int, cell: Cell, seed: int) -> Path:
    label = cell.labels.replace(" ", "_").replace("%", "pct")
    return Path(cfg.out) / "finetune" / f"fold{fold}-{cell.arm}-{label}-s{seed}"
