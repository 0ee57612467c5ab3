"""``tpem-seg train pretrain|finetune|evaluate|study`` and ``tpem-seg simulate``.

torch and the training modules are imported inside the command bodies, so
registering these commands keeps ``tpem-seg run`` light.

Every training command takes ``--config FILE`` (TOML or YAML, fields of the config
dataclasses in :mod:`tpem_seg.train.config`), dedicated flags for the common
settings, and ``--set key=value`` (repeatable, dotted keys, YAML values) for any
other field. Precedence: file < ``--set`` < dedicated flags.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from tpem_seg.errors import TpemSegError
from tpem_seg.util.numbers import parse_numbers

log = logging.getLogger(__name__)

train_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="MIM pretraining, fine-tuning with few labels, evaluation, the label-efficiency study.")

CONFIG = typer.Option(None, "--config", "-c", help="config file (.toml, .yaml)")
SETS = typer.Option(None, "--set", help="override any config field: key=value (dotted, YAML value), repeatable")
SEED = typer.Option(None, "--seed", help="random seed")
DEVICE = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N")
STEPS = typer.Option(None, "--steps", help="optimiser steps")
BATCH = typer.Option(None, "--batch-size", help="patches per step and process")
OUT = typer.Option(None, "--out", "-o", help="output folder for checkpoints")
TRAIN = typer.Option(None, "--train", help="training volume IMAGE[=LABELS], repeatable (replaces the config's list)")
PROGRESS = typer.Option(None, "--progress/--no-progress", help="progress bar")
MODEL = typer.Option(None, "--model", help="architecture config, e.g. unetr-t16")
IN_CHANNELS = typer.Option(None, "--in-channels", help="input channels of the network")
RESUME = typer.Option(None, "--resume/--no-resume", help="continue from OUT/last.pt")


def register(app: typer.Typer) -> None:
    """Add ``train`` (a command group) and ``simulate`` to the main app."""
    app.add_typer(train_app, name="train")
    app.command("simulate")(simulate)


@contextmanager
def training_logs():
    """Show INFO logs (loss, throughput) unless -v/-vv chose otherwise, without breaking the progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    logger = logging.getLogger("tpem_seg")
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        logger.setLevel(previous)


def is_main_process() -> bool:
    """False on the other ranks of a torchrun launch, which stay quiet on the terminal."""
    import os

    return os.environ.get("RANK", "0") == "0"


def volume_entries(items: Optional[List[str]]) -> Optional[list[dict]]:
    """``["IMG=LABELS", "IMG"]`` -> ``[{"image": IMG, "labels": LABELS}, {"image": IMG}]``; None if not given."""
    if not items:
        return None
    entries = []
    for item in items:
        image, _, labels = item.partition("=")
        if not image:
            raise TpemSegError(f"volume {item!r} must be IMAGE or IMAGE=LABELS")
        entries.append({"image": image, **({"labels": labels} if labels else {})})
    return entries


@train_app.command("pretrain")
def pretrain_command(
    config: Optional[Path] = CONFIG,
    masking: Optional[str] = typer.Option(None, "--masking", help="random | intensity | channel"),
    mask_ratio: Optional[float] = typer.Option(None, "--mask-ratio", help="fraction of mask patches masked"),
    mask_patch: Optional[str] = typer.Option(None, "--mask-patch", help="mask-patch size D,H,W in voxels"),
    model: Optional[str] = MODEL,
    in_channels: Optional[int] = IN_CHANNELS,
    train: Optional[List[str]] = TRAIN,
    steps: Optional[int] = STEPS,
    batch_size: Optional[int] = BATCH,
    seed: Optional[int] = SEED,
    device: Optional[str] = DEVICE,
    out: Optional[str] = OUT,
    resume: Optional[bool] = RESUME,
    progress: Optional[bool] = PROGRESS,
    sets: Optional[List[str]] = SETS,
) -> None:
    """Pretrain the UNETR encoder by masked image modelling on unlabelled volumes."""
    from tpem_seg.train.config import PretrainConfig, load_config
    from tpem_seg.train.pretrain import pretrain

    cfg = load_config(PretrainConfig, config, sets=sets or (), overrides={
        "masking": masking, "mask_ratio": mask_ratio, "mask_patch": mask_patch, "model": model,
        "in_channels": in_channels, "train": volume_entries(train), "steps": steps, "batch_size": batch_size,
        "seed": seed, "device": device, "out": out, "resume": resume, "progress": progress})
    with training_logs():
        path = pretrain(cfg)
    if is_main_process():
        typer.echo(f"pretrained encoder: {path}", err=True)


@train_app.command("finetune")
def finetune_command(
    config: Optional[Path] = CONFIG,
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="pretrain checkpoint for the encoder"),
    label_fraction: Optional[float] = typer.Option(None, "--label-fraction", help="share of the annotation used"),
    label_unit: Optional[str] = typer.Option(None, "--label-unit", help="region | volume"),
    model: Optional[str] = MODEL,
    in_channels: Optional[int] = IN_CHANNELS,
    train: Optional[List[str]] = TRAIN,
    val: Optional[List[str]] = typer.Option(None, "--val", help="validation volume IMAGE=LABELS, repeatable"),
    steps: Optional[int] = STEPS,
    batch_size: Optional[int] = BATCH,
    seed: Optional[int] = SEED,
    device: Optional[str] = DEVICE,
    out: Optional[str] = OUT,
    resume: Optional[bool] = RESUME,
    progress: Optional[bool] = PROGRESS,
    sets: Optional[List[str]] = SETS,
) -> None:
    """Fine-tune a UNETR for segmentation (from scratch or a pretrained encoder); keep the best by validation Dice."""
    from tpem_seg.train.config import FinetuneConfig, load_config
    from tpem_seg.train.finetune import finetune

    cfg = load_config(FinetuneConfig, config, sets=sets or (), overrides={
        "pretrained": pretrained, "label_fraction": label_fraction, "label_unit": label_unit, "model": model,
        "in_channels": in_channels, "train": volume_entries(train), "val": volume_entries(val), "steps": steps,
        "batch_size": batch_size, "seed": seed, "device": device, "out": out, "resume": resume,
        "progress": progress})
    with training_logs():
        path = finetune(cfg)
    if is_main_process():
        typer.echo(f"fine-tuned model: {path}", err=True)


@train_app.command("evaluate")
def evaluate_command(
    config: Optional[Path] = CONFIG,
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="finetune checkpoint (best.pt)"),
    volume: Optional[List[str]] = typer.Option(None, "--volume", help="IMAGE=LABELS, repeatable"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="write the scores as JSON here"),
    save_predictions: Optional[str] = typer.Option(None, "--save-predictions", help="folder for NAME_labels.tif"),
    device: Optional[str] = DEVICE,
    progress: Optional[bool] = PROGRESS,
    sets: Optional[List[str]] = SETS,
) -> None:
    """Segment labelled volumes with a checkpoint; report Dice per class and clDice for vessels."""
    from tpem_seg.train.config import EvaluateConfig, load_config
    from tpem_seg.train.evaluate import evaluate

    cfg = load_config(EvaluateConfig, config, sets=sets or (), overrides={
        "checkpoint": checkpoint, "volumes": volume_entries(volume), "out": out,
        "save_predictions": save_predictions, "device": device, "progress": progress})
    with training_logs():
        result = evaluate(cfg)
    typer.echo(result.table())


@train_app.command("study")
def study_command(
    preset: str = typer.Option("cpu", "--preset", help="smoke (minutes) | cpu (~60 min, 2 idle cores) | gpu"),
    data: Optional[Path] = typer.Option(None, "--data", help="the vesselnn_2pm folder [default: "
                                        "../shared/data/vesselnn_2pm]"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="work folder, results are cached there [default: "
                                       "runs/label_efficiency, smoke: runs/label_efficiency_smoke]"),
    doc: Optional[Path] = typer.Option(None, "--doc", help="markdown report to write [default: "
                                       "docs/label_efficiency.md, smoke: in its work folder]"),
    device: Optional[str] = DEVICE,
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds, e.g. 0,1,2"),
    sets: Optional[List[str]] = SETS,
    folds: Optional[str] = typer.Option(None, "--folds", help="run only these folds, e.g. 0,2 (processes sharing "
                                        "--out can split the folds; the report covers all)"),
    pilot: bool = typer.Option(False, "--pilot", help="run only the pilot (fine-tuning length, cost per run)"),
    report_only: bool = typer.Option(False, "--report-only", help="train nothing: write the report from the "
                                     "finished runs"),
) -> None:
    """Run the label-efficiency study (all arms, cached per run) and write its markdown report."""
    from tpem_seg.train.study import Results, run_pilot, run_study, study_config, study_specs

    cfg = study_config(preset, data=data and str(data), out=out and str(out), doc=doc and str(doc), device=device,
                       seeds=seeds, sets=sets or ())
    with training_logs():
        if pilot:
            rows = run_pilot(cfg, Results(Path(cfg.out) / "results.jsonl"), study_specs(cfg))
            for row in sorted(rows, key=lambda r: r["steps"]):
                typer.echo(f"pilot: {row['steps']} steps: held-out Dice "
                           f"{row['per_volume'][row['held_out']]['dice/vessel']:.4f}, "
                           f"{row['train_cpu_seconds'] / row['steps']:.2f} CPU s/step", err=True)
            return
        chosen = parse_numbers(folds, "--folds", kind=int, example="0,2") if folds else None
        report = run_study(cfg, report_only=report_only, folds=chosen)
    typer.echo(f"report: {report}", err=True)


def simulate(
    output: Path = typer.Option(..., "--output", "-o", help="image file to write (.tif: 2-channel ImageJ)"),
    labels: Optional[Path] = typer.Option(None, "--labels", help="labels file (.tif): 0 background, 1 vessel, "
                                          "2 neuron"),
    shape: str = typer.Option("32,256,256", "--shape", help="Z,Y,X voxels"),
    spacing: str = typer.Option("2,1,1", "--spacing", help="voxel size z,y,x in µm"),
    seed: int = typer.Option(0, "--seed", help="same seed, shape and spacing: the same volume"),
) -> None:
    """Simulate a two-channel two-photon volume (vessels, neurons) with exact labels."""
    from tpem_seg.sim import save_simulated, simulate_volume

    shape_t = parse_numbers(shape.replace("x", ","), "--shape", 3, int, "16,128,128", positive=True)
    spacing_t = parse_numbers(spacing, "--spacing", 3, example="5,1,1", positive=True)
    if output.suffix.lower() not in (".tif", ".tiff"):
        raise TpemSegError(f"{output}: the simulator writes TIFF; name the output NAME.tif")
    with training_logs():
        save_simulated(simulate_volume(shape_t, spacing_t, seed=seed), output, labels)
    typer.echo(f"{output}: {'x'.join(map(str, shape_t))} voxels at {','.join(f'{s:g}' for s in spacing_t)} µm, "
               f"2 channels (vessel, neuron){f'; labels {labels}' if labels else ''}", err=True)

