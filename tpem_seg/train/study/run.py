"""Running the study: pretrain each masking strategy once per fold, fine-tune every arm, score the test volumes."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from tpem_seg.errors import TpemSegError
from tpem_seg.train.config import FinetuneConfig, PretrainConfig, VolumeSpec
from tpem_seg.train.study.design import StudyConfig, cropped_specs, simulated_specs, vesselnn_specs
from tpem_seg.train.study.report import write_report
from tpem_seg.train.study.results import Results

log = logging.getLogger(__name__)


def run_study(cfg: StudyConfig) -> Path:
    """Run every arm not yet in the results, then write the report; returns its path."""
    started = time.perf_counter()
    out = Path(cfg.out)
    results = Results(out / "results.jsonl")
    specs = vesselnn_specs(cfg.data)
    if cfg.max_yx:
        specs = cropped_specs(specs, cfg.max_yx, out / "crops")
    unknown = sorted({n for fold in cfg.folds for n in fold} - set(specs))
    if unknown:
        raise TpemSegError(f"fold volumes {unknown} are not in {cfg.data}/volumes.csv; fix the folds")
    for k, test in enumerate(cfg.folds):
        train = [specs[n] for n in specs if n not in test]
        run_fold(cfg, results, k, train, [specs[n] for n in test])
    otsu = otsu_scores(specs.values(), out / "otsu.json")
    if cfg.sim.enabled:
        run_sim_table(cfg, results)
    seconds = time.perf_counter() - started
    doc = write_report(cfg, results, otsu, specs, seconds)
    log.info("study done in %.1f min; report %s", seconds / 60, doc)
    return doc


def run_fold(cfg: StudyConfig, results: Results, k: int, train: list[VolumeSpec], test: list[VolumeSpec]) -> None:
    """Pretrain per masking strategy on the fold's training volumes, then every fine-tuning arm."""
    out = Path(cfg.out)
    unlabelled = [replace(s, labels=None) for s in train]  # pretraining never sees labels or test volumes
    encoders = {arm: pretrain_once(cfg, pretrain_config(cfg, unlabelled, arm, out / "pretrain" / f"fold{k}-{arm}"),
                                   results, "vesselnn", k)
                for arm in cfg.arms if arm != "scratch"}
    for seed in cfg.seeds:
        for fraction in cfg.fractions:
            for arm in cfg.arms:
                key = dict(table="vesselnn", fold=k, arm=arm, fraction=fraction, seed=seed)
                if results.has(**key):
                    continue
                ft = finetune_config(cfg, train, encoders.get(arm), fraction, seed,
                                     out / "finetune" / f"fold{k}-{arm}-{fraction:g}-s{seed}")
                results.add({**key, **finetune_and_score(cfg, ft, test)})


def pretrain_config(cfg: StudyConfig, volumes: list[VolumeSpec], masking: str, out: Path, in_channels: int = 1,
                    steps: int | None = None, mask_space: str = "auto") -> PretrainConfig:
    return PretrainConfig(model=cfg.model, in_channels=in_channels, train=volumes, masking=masking,
                          mask_ratio=cfg.mask_ratio, mask_patch=cfg.mask_patch, mask_space=mask_space,
                          steps=steps or cfg.pretrain_steps, batch_size=cfg.pretrain_batch, lr=cfg.pretrain_lr,
                          warmup_steps=cfg.warmup_steps, device=cfg.device, threads=cfg.threads, seed=0,
                          out=str(out), progress=False, log_every=max(1, (steps or cfg.pretrain_steps) // 5))


def finetune_config(cfg: StudyConfig, train: list[VolumeSpec], pretrained: str | None, fraction: float, seed: int,
                    out: Path, **changes) -> FinetuneConfig:
    base = FinetuneConfig(model=cfg.model, in_channels=1, train=train, pretrained=pretrained,
                          label_fraction=fraction, label_unit=cfg.label_unit, region_size=cfg.region_size,
                          steps=cfg.finetune_steps, batch_size=cfg.finetune_batch, lr=cfg.finetune_lr,
                          warmup_steps=cfg.warmup_steps, device=cfg.device, threads=cfg.threads, seed=seed,
                          out=str(out), progress=False, log_every=max(1, cfg.finetune_steps // 5))
    return replace(base, **changes)


def pretrain_once(cfg: StudyConfig, pc: PretrainConfig, results: Results, table: str, fold: int) -> str:
    """Pretrain unless a finished checkpoint of the same run exists; record its loss and time."""
    from tpem_seg.models.checkpoint import load_checkpoint
    from tpem_seg.train.pretrain import pretrain

    path = Path(pc.out) / "last.pt"
    key = dict(table=f"{table}-pretrain", fold=fold, arm=pc.masking, fraction=None, seed=pc.seed)
    if path.is_file() and results.has(**key) and load_checkpoint(path).extra.get("step") == pc.steps:
        return str(path)
    started = time.perf_counter()
    pretrain(pc)
    loss = load_checkpoint(path).meta["metrics"]["masked_l1"]
    results.add({**key, "masked_l1": loss, "seconds": time.perf_counter() - started})
    return str(path)


def finetune_and_score(cfg: StudyConfig, ft: FinetuneConfig, test: list[VolumeSpec]) -> dict:
    """Fine-tune, segment the test volumes, score them; the checkpoint is removed unless kept."""
    from tpem_seg.train import engine
    from tpem_seg.train.evaluate import evaluate_checkpoint, labelled_volume, load_segmentation_model
    from tpem_seg.train.finetune import finetune

    started = time.perf_counter()
    best = finetune(ft)
    trained = time.perf_counter() - started
    device = engine.resolve_device(cfg.device)
    model, ckpt = load_segmentation_model(best, device)
    volumes = [labelled_volume(s, ft.binary_labels, len(ft.classes)) for s in test]
    scores = evaluate_checkpoint(model, ckpt, volumes, device, cfg.eval_overlap, cfg.eval_batch)
    if not cfg.keep_checkpoints:
        shutil.rmtree(ft.out, ignore_errors=True)  # only the scores matter here; 8-25 MB a run
    return {"per_volume": scores.per_volume, "train_seconds": trained,
            "eval_seconds": time.perf_counter() - started - trained}


def otsu_scores(specs: Iterable[VolumeSpec], cache: Path) -> dict[str, dict[str, float]]:
    """The classic baseline per volume: a global Otsu threshold, Dice and clDice against the labels."""
    from tpem_seg.train.data import read_labels, read_spec
    from tpem_seg.train.metrics import cldice, dice, otsu_labels

    if cache.is_file():
        return json.loads(cache.read_text())
    scores = {}
    for spec in specs:
        volume = read_spec(spec)
        image = volume.read_czyx()[0]
        truth = read_labels(spec.labels, volume.shape_zyx, True, 2) == 1
        pred = otsu_labels(image) == 1
        scores[spec.name] = {"dice/vessel": dice(pred, truth), "cldice/vessel": cldice(pred, truth)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(scores, indent=2))
    return scores


def run_sim_table(cfg: StudyConfig, results: Results) -> None:
    """Table 2: pretrain (random / channel-separated, input-space masks) on simulated two-channel volumes,
    fine-tune with 25% of the labels, score vessel and neuron Dice on held-out simulated volumes."""
    sim = cfg.sim
    out = Path(cfg.out) / "sim"
    train, test, extra = simulated_specs(sim, out / "volumes")
    unlabelled = [replace(s, labels=None) for s in train + extra]
    encoders = {arm: pretrain_once(cfg, pretrain_config(cfg, unlabelled, arm, out / f"pretrain-{arm}", in_channels=2,
                                                        steps=sim.pretrain_steps, mask_space="input"),
                                   results, "sim", 0)
                for arm in sim.arms if arm != "scratch"}
    for seed in cfg.seeds:
        for arm in sim.arms:
            key = dict(table="sim", fold=0, arm=arm, fraction=sim.fraction, seed=seed)
            if results.has(**key):
                continue
            ft = finetune_config(cfg, train, encoders.get(arm), sim.fraction, seed, out / f"finetune-{arm}-s{seed}",
                                 in_channels=2, classes=["background", "vessel", "neuron"], binary_labels=False,
                                 region_size=sim.region_size, steps=sim.finetune_steps,
                                 log_every=max(1, sim.finetune_steps // 5))
            results.add({**key, **finetune_and_score(cfg, ft, test)})
