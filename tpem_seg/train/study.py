"""The label-efficiency study: does MIM pretraining let 25% of the labels do the work of 100%?

    tpem-seg train study --preset cpu            # ~75-90 min on 2 idle CPU cores
    tpem-seg train study --preset gpu --device cuda
    tpem-seg train study --preset smoke          # a few minutes: checks that everything runs

Table 1, real in vivo vessels (``vesselnn_2pm``, 6 volumes): folds of 2 test volumes;
for each fold, MIM pretraining (random and intensity masking) on the fold's 4 training
volumes only, unlabelled; then fine-tuning from scratch or from either encoder with 25%
and 100% of the fold's annotation, several seeds; every model segments the fold's test
volumes by sliding window and is scored (Dice, clDice). Table 2, simulated two-channel
volumes: random vs channel-separated masking, 25% of the labels, Dice per class.

Every finished run is appended to ``OUT/results.jsonl`` and skipped when the study is
run again, so an interrupted study resumes; the report (markdown) is rewritten from
all results at the end.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tpem_seg.errors import TpemSegError
from tpem_seg.train.config import FinetuneConfig, PretrainConfig, VolumeSpec, apply_override, from_dict, \
    parse_override
from tpem_seg.train.data import region_grid
from tpem_seg.util import atomic
from tpem_seg.util.provenance import process_command

log = logging.getLogger(__name__)

#: Test volumes per fold: each pair mixes a sparse and a dense labelling and two labs.
FOLDS = [["burgess2014_bbbDisruption", "poon2015_plaqueVessels"],
         ["burgess2014_noisySparseVessels", "poon2015_BBB_Leakage"],
         ["burgess2014_tgMouse", "santos2015_mixedSizelowContrastVessels"]]


@dataclass
class SimStudy:
    """Table 2: simulated two-channel volumes (vessel, neuron) -> background/vessel/neuron."""

    enabled: bool = True
    n_train: int = 3
    n_test: int = 2
    n_unlabelled: int = 3
    shape: tuple[int, int, int] = (16, 128, 128)
    spacing: tuple[float, float, float] = (5.0, 1.0, 1.0)
    seed: int = 500
    arms: list[str] = field(default_factory=lambda: ["scratch", "random", "channel"])
    fraction: float = 0.25
    region_size: tuple[int, int] = (32, 32)
    pretrain_steps: int = 300
    finetune_steps: int = 150


@dataclass
class StudyConfig:
    """What the study runs; the presets below fill it for a 2-core CPU, a GPU or a smoke test."""

    preset: str = "cpu"
    data: str = "../shared/data/vesselnn_2pm"
    out: str = "runs/label_efficiency"
    doc: str = "docs/label_efficiency.md"
    model: str = "unetr-t16"
    device: str = "auto"
    threads: int | None = None
    folds: list[list[str]] = field(default_factory=lambda: [list(f) for f in FOLDS])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fractions: list[float] = field(default_factory=lambda: [0.25, 1.0])
    arms: list[str] = field(default_factory=lambda: ["scratch", "random", "intensity"])
    label_unit: str = "region"
    region_size: tuple[int, int] = (128, 128)
    max_yx: int | None = None
    pretrain_steps: int = 600
    pretrain_batch: int = 8
    pretrain_lr: float = 5e-4
    mask_ratio: float = 0.6
    mask_patch: tuple[int, int, int] = (16, 16, 16)
    finetune_steps: int = 200
    finetune_batch: int = 2
    finetune_lr: float = 3e-3
    warmup_steps: int = 20
    eval_overlap: float = 0.0
    eval_batch: int = 4
    keep_checkpoints: bool = False
    sim: SimStudy = field(default_factory=SimStudy)


PRESETS: dict[str, dict[str, Any]] = {
    # 3 folds x 3 arms x 2 fractions x 3 seeds = 54 fine-tunes + 6 pretrainings, and table 2; tiles
    # without overlap at evaluation (a third of the tiles of overlap 0.25) to fit ~75-90 min on 2 cores
    "cpu": {},
    # the same design with longer training and more seeds, for one GPU
    "gpu": {"device": "cuda", "seeds": [0, 1, 2, 3, 4], "pretrain_steps": 4000, "pretrain_batch": 32,
            "finetune_steps": 2000, "finetune_batch": 8, "warmup_steps": 100,
            "eval_overlap": 0.25,
            "sim": {"pretrain_steps": 2000, "finetune_steps": 1000, "n_unlabelled": 12}},
    # every code path once, on crops, in a few minutes: numbers mean nothing
    "smoke": {"out": "runs/label_efficiency_smoke", "doc": "runs/label_efficiency_smoke/label_efficiency.md",
              "folds": [FOLDS[0]], "seeds": [0], "max_yx": 128, "region_size": [64, 64], "pretrain_steps": 10,
              "pretrain_batch": 2, "finetune_steps": 10, "warmup_steps": 2, "eval_overlap": 0.0,
              "sim": {"n_train": 2, "n_test": 1, "n_unlabelled": 0, "shape": [16, 64, 64], "pretrain_steps": 5,
                      "finetune_steps": 5}},
}


def study_config(preset: str = "cpu", data: str | None = None, out: str | None = None, doc: str | None = None,
                 device: str | None = None, seeds: str | None = None, sets: Sequence[str] = ()) -> StudyConfig:
    """The preset's config with the given overrides (``sets``: ``key=value`` as for the training commands)."""
    if preset not in PRESETS:
        raise TpemSegError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    values: dict[str, Any] = json.loads(json.dumps(PRESETS[preset]))
    values["preset"] = preset
    for text in sets:
        keys, value = parse_override(text)
        apply_override(values, keys, value)
    for key, value in (("data", data), ("device", device), ("out", out), ("doc", doc)):
        if value is not None:
            values[key] = value
    if seeds:
        values["seeds"] = [int(s) for s in seeds.split(",")]
    return from_dict(StudyConfig, values, where="study")


# --- data ----------------------------------------------------------------------------------------------


def vesselnn_specs(data: str | Path) -> dict[str, VolumeSpec]:
    """The labelled real volumes by name, with their voxel size from ``volumes.csv``."""
    root = Path(data)
    table = root / "volumes.csv"
    if not table.is_file():
        raise TpemSegError(f"{table} not found; pass --data pointing at the vesselnn_2pm folder")
    specs = {}
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            name = row["name"]
            spacing = tuple(float(row[f"spacing_{a}_um"]) for a in "zyx")
            specs[name] = VolumeSpec(image=str(root / "images" / f"{name}.tif"),
                                     labels=str(root / "labels" / f"{name}.tif"), spacing=spacing, name=name)
    return specs


def cropped_specs(specs: dict[str, VolumeSpec], max_yx: int, folder: Path) -> dict[str, VolumeSpec]:
    """Central y-x crops of at most ``max_yx`` voxels, written once to ``folder`` (for the smoke preset)."""
    from tpem_seg.io import read_volume, write_volume

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, spec in specs.items():
        paths = {"image": folder / f"{name}.tif", "labels": folder / f"{name}_labels.tif"}
        for key, path in paths.items():
            if path.is_file():
                continue
            data = read_volume(getattr(spec, key)).read_czyx()[0]
            y0, x0 = (max(0, (s - max_yx) // 2) for s in data.shape[1:])
            write_volume(path, data[:, y0:y0 + max_yx, x0:x0 + max_yx], axes="ZYX", spacing=spec.spacing)
        out[name] = replace(spec, image=str(paths["image"]), labels=str(paths["labels"]))
    return out


def simulated_specs(cfg: SimStudy, folder: Path) -> tuple[list[VolumeSpec], list[VolumeSpec], list[VolumeSpec]]:
    """Write the simulated volumes once: (labelled training, test, unlabelled extra) specs."""
    from tpem_seg.sim import save_simulated, simulate_volume

    folder.mkdir(parents=True, exist_ok=True)
    groups: list[list[VolumeSpec]] = [[], [], []]
    seed = cfg.seed
    for group, count in zip(groups, (cfg.n_train, cfg.n_test, cfg.n_unlabelled)):
        for _ in range(count):
            image, labels = folder / f"sim{seed}.tif", folder / f"sim{seed}_labels.tif"
            if not (image.is_file() and labels.is_file()):
                save_simulated(simulate_volume(tuple(cfg.shape), tuple(cfg.spacing), seed=seed), image, labels)
            group.append(VolumeSpec(str(image), str(labels), name=f"sim{seed}"))
            seed += 1
    return groups[0], groups[1], groups[2]


# --- results -----------------------------------------------------------------------------------------------


class Results:
    """Finished runs, one JSON line each in a file; a run's key identifies it across re-runs."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        if path.is_file():
            self.rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @staticmethod
    def key(row: dict) -> str:
        return json.dumps({k: row[k] for k in ("table", "fold", "arm", "fraction", "seed")}, sort_keys=True)

    def has(self, **key) -> bool:
        wanted = self.key(key)
        return any(self.key(r) == wanted for r in self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def select(self, **match) -> list[dict]:
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]


# --- running ----------------------------------------------------------------------------------------------


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


# --- statistics and the report ---------------------------------------------------------------------------------


def unit_scores(results: Results, table: str, arm: str, fraction: float, metric: str) -> dict[tuple[str, int], float]:
    """``{(test volume, seed): score}`` of one arm: the unit of the tables and the paired tests."""
    scores = {}
    for row in results.select(table=table, arm=arm, fraction=fraction):
        for volume, metrics in row["per_volume"].items():
            scores[(volume, row["seed"])] = metrics[metric]
    return scores


def mean_sd(values: Sequence[float]) -> str:
    if not len(values):
        return "–"
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {sd:.3f}"


def paired_test(a: dict, b: dict) -> dict[str, float]:
    """Paired comparison of ``a - b`` over their common units: mean difference, its 95% CI (t),
    the paired t-test and the Wilcoxon signed-rank test (two-sided)."""
    from scipy import stats

    units = sorted(set(a) & set(b))
    d = np.array([a[u] - b[u] for u in units])
    out = {"n": len(units), "mean_diff": float(d.mean()) if len(d) else float("nan")}
    if len(d) < 3 or np.allclose(d, d[0]):
        return {**out, "ci_low": float("nan"), "ci_high": float("nan"), "p_t": float("nan"),
                "p_wilcoxon": float("nan")}
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return {**out, "ci_low": float(d.mean() - half), "ci_high": float(d.mean() + half),
            "p_t": float(stats.ttest_rel([a[u] for u in units], [b[u] for u in units]).pvalue),
            "p_wilcoxon": float(stats.wilcoxon(d).pvalue)}


def describe_comparison(name: str, test: dict[str, float]) -> str:
    """One plain sentence for a paired comparison."""
    if test["n"] < 3 or not np.isfinite(test["p_wilcoxon"]):
        return f"{name}: too few paired runs ({test['n']}) for a test."
    verdict = ("no significant difference" if test["p_wilcoxon"] >= 0.05 else
               "significantly higher" if test["mean_diff"] > 0 else "significantly lower")
    return (f"{name}: {verdict} (mean Dice difference {test['mean_diff']:+.3f}, 95% CI "
            f"[{test['ci_low']:+.3f}, {test['ci_high']:+.3f}], Wilcoxon p = {test['p_wilcoxon']:.3g}, "
            f"n = {test['n']} test-volume x seed pairs).")


def write_report(cfg: StudyConfig, results: Results, otsu: dict, specs: dict[str, VolumeSpec], seconds: float) -> Path:
    """Write the markdown report from all results; returns its path."""
    lines = report_lines(cfg, results, otsu, specs, seconds)
    doc = atomic.write_text(cfg.doc, "\n".join(lines) + "\n")
    shutil.copyfile(results.path, raw_results_path(cfg))
    return doc


def raw_results_path(cfg: StudyConfig) -> Path:
    """Where the report keeps a copy of the raw results (next to it, so it travels with the report)."""
    doc = Path(cfg.doc)
    return doc.with_name(f"{doc.stem}_results.jsonl")


def report_lines(cfg: StudyConfig, results: Results, otsu: dict, specs: dict[str, VolumeSpec],
                 seconds: float) -> list[str]:
    import torch

    pretrained = [a for a in cfg.arms if a != "scratch"]
    lines = [
        "# Label efficiency: MIM pretraining vs training from scratch",
        "",
        f"Generated by `{process_command()}` (preset `{cfg.preset}`) on "
        f"{datetime.date.today().isoformat()} ({platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, device {cfg.device}). The runs it reports took {compute_minutes(results):.1f} min "
        f"of training and evaluation in all (finished runs are cached in `{cfg.out}` and not rerun; the "
        f"invocation that wrote this file took {seconds / 60:.1f} min). Per run: {stage_times(results)}.",
    ]
    if cfg.preset == "smoke":
        lines += ["", "**Smoke preset: a few training steps on 128x128 crops, one fold, one seed. These numbers only "
                      "show that the pipeline runs; they say nothing about label efficiency. The study itself is "
                      "`tpem-seg train study --preset cpu`; its report replaces this file.**"]
    lines += ["", "## Data and splits", "",
              "Real in vivo two-photon volumes of mouse cortex vessels (`vesselnn_2pm`, Teikari et al. 2016; "
              "labels `> 0`), one channel, 5 µm z-steps. Folds (each model is scored on its fold's test volumes; "
              "MIM pretraining sees only the fold's training volumes, unlabelled):", "",
              "| fold | test volumes | training volumes |", "|---|---|---|"]
    for k, test in enumerate(cfg.folds):
        lines.append(f"| {k} | {', '.join(test)} | {', '.join(n for n in specs if n not in test)} |")
    columns = len(region_grid((512, 512), cfg.region_size))
    lines += ["", f"**What 25% means**: by annotated sub-region. Each training volume's y-x plane is cut into "
                  f"full-depth columns of about {cfg.region_size[0]}x{cfg.region_size[1]} voxels ({columns} for a "
                  f"512x512 volume); a fraction f keeps the labels of round(f x columns) of them, drawn per seed, "
                  f"and the loss ignores the rest. The images stay whole, as when an annotator labels part of "
                  f"every stack. 100% uses all labels of the fold's training volumes.", "",
              "## Settings", "",
              f"- network: `{cfg.model}` (MONAI UNETR, tiles 16x64x64), 1 channel -> background/vessel",
              f"- MIM pretraining: {cfg.pretrain_steps} steps x {cfg.pretrain_batch} patches, AdamW lr "
              f"{cfg.pretrain_lr:g}, mask ratio {cfg.mask_ratio}, mask patch {'x'.join(map(str, cfg.mask_patch))} "
              f"(= ViT tokens, SimMIM mask token), L1 on masked voxels",
              f"- fine-tuning: {cfg.finetune_steps} steps x {cfg.finetune_batch} patches, AdamW lr {cfg.finetune_lr:g} "
              f"(warm-up {cfg.warmup_steps}, cosine), Dice + CE, half the patches centred on vessels, flips/rot90/"
              f"intensity/noise augmentation; the last weights are scored (no validation split: every labelled "
              f"voxel of the fold trains)",
              f"- evaluation: sliding window on the runtime's tiling path, overlap {cfg.eval_overlap}, Gaussian "
              f"blending; Dice and clDice of the vessel class per test volume",
              f"- seeds {cfg.seeds} (seed: label subset, decoder init, patch order; the encoder of a fold and "
              f"strategy is pretrained once)", ""]

    lines += ["## Table 1: real vessels, Dice (vessel)", "",
              "Mean ± sd over test volumes x seeds "
              f"({len(cfg.folds) * 2} x {len(cfg.seeds)} per cell when complete).", "",
              "| arm | " + " | ".join(f"{f:.0%} labels: Dice" for f in cfg.fractions) + " | "
              + " | ".join(f"{f:.0%}: clDice" for f in cfg.fractions) + " |",
              "|---" * (1 + 2 * len(cfg.fractions)) + "|"]
    for arm in cfg.arms:
        dice_cells = [mean_sd(list(unit_scores(results, "vesselnn", arm, f, "dice/vessel").values()))
                      for f in cfg.fractions]
        cl_cells = [mean_sd(list(unit_scores(results, "vesselnn", arm, f, "cldice/vessel").values()))
                    for f in cfg.fractions]
        lines.append(f"| {arm_name(arm)} | " + " | ".join(dice_cells + cl_cells) + " |")
    test_names = [n for fold in cfg.folds for n in fold]
    otsu_dice = [otsu[n]["dice/vessel"] for n in test_names if n in otsu]
    otsu_cl = [otsu[n]["cldice/vessel"] for n in test_names if n in otsu]
    dashes = " – |" * (len(cfg.fractions) - 1)
    lines.append(f"| Otsu threshold (no training) | {mean_sd(otsu_dice)} |{dashes} {mean_sd(otsu_cl)} |{dashes}")
    lines += ["", "Per test volume (mean over seeds):", "",
              "| volume | Otsu | " + " | ".join(f"{arm_name(a)} {f:.0%}" for a in cfg.arms for f in cfg.fractions)
              + " |", "|---" * (2 + len(cfg.arms) * len(cfg.fractions)) + "|"]
    for name in test_names:
        cells = []
        for arm in cfg.arms:
            for f in cfg.fractions:
                vals = [v for (vol, _), v in unit_scores(results, "vesselnn", arm, f, "dice/vessel").items()
                        if vol == name]
                cells.append(f"{np.mean(vals):.3f}" if vals else "–")
        lines.append(f"| {name} | {otsu.get(name, {}).get('dice/vessel', float('nan')):.3f} | "
                     + " | ".join(cells) + " |")

    lines += ["", "### Paired tests", "",
              "Differences in vessel Dice, paired by test volume and seed (scipy.stats: paired t-test and Wilcoxon "
              "signed-rank, two-sided). The pairs share volumes across seeds, so they are not fully independent; "
              "read p-values as indicative.", "",
              "| comparison | n | mean diff | 95% CI | p (t) | p (Wilcoxon) |", "|---|---|---|---|---|---|"]
    sentences = []
    low, high = min(cfg.fractions), max(cfg.fractions)
    scratch_high = unit_scores(results, "vesselnn", "scratch", high, "dice/vessel")
    scratch_low = unit_scores(results, "vesselnn", "scratch", low, "dice/vessel")
    for arm in pretrained:
        mine = unit_scores(results, "vesselnn", arm, low, "dice/vessel")
        others = {f"scratch {high:.0%}": scratch_high, f"scratch {low:.0%}": scratch_low}  # one if low == high
        for other_name, other in others.items():
            name = f"{arm_name(arm)} {low:.0%} − {other_name}"
            t = paired_test(mine, other)
            lines.append(f"| {name} | {t['n']} | {number(t['mean_diff'], '+.3f')} | "
                         f"[{number(t['ci_low'], '+.3f')}, {number(t['ci_high'], '+.3f')}] | "
                         f"{number(t['p_t'], '.3g')} | {number(t['p_wilcoxon'], '.3g')} |")
            sentences.append(describe_comparison(name, t))
    lines += ["", "### Conclusion", ""] + [f"- {s}" for s in sentences]
    lines += ["- " + conclusion(results, cfg, pretrained, low, high)]

    pre_rows = results.select(table="vesselnn-pretrain")
    if pre_rows:
        lines += ["", "Pretraining (masked L1 at the last step, per fold): " + "; ".join(
            f"fold {r['fold']} {r['arm']} {r['masked_l1']:.4f} ({r['seconds'] / 60:.1f} min)" for r in pre_rows)]

    if cfg.sim.enabled:
        lines += sim_table_lines(cfg, results)
    lines += ["", "## Notes: what was tried while building the study", "",
              "- Learning rate. MONAI's UNETR with AdamW at 1e-3 learns slowly in short runs: Adam bounds each "
              "weight's step by the LR, and the logits come from instance-normalised decoder features, so they move "
              "slowly. On simulated 3-class data (unetr-test, 150 steps) the vessel class was never predicted at "
              "1e-3 or 5e-3 and reached Dice 0.63 at 1e-2. On the real vessels (fold 0, scratch, 100% labels, 300 "
              "steps x 2 patches) 1e-2 and 3e-3 gave the same mean test Dice (0.701, 0.703); the study uses 3e-3.",
              "- One recipe for every arm (same LR for encoder and decoder, no layer-wise decay for pretrained "
              "encoders), chosen on the scratch arm, so a pretraining gain cannot come from a recipe tuned for it.",
              "- Masks on the real data cover whole ViT tokens (16x16x16 voxels: 16 tokens per 16x64x64 tile), the "
              "SimMIM set-up; the simulated table masks in input space so that random and channel-separated masking "
              "differ only in whether the channels share a mask.",
              "- The CPU preset evaluates without tile overlap (the runtime's default is 0.25) to fit the time budget; "
              "the GPU preset uses 0.25.",
              "- Fine-tuning length. 200 steps leave the CPU models under-trained: they over-segment (on "
              "`poon2015_BBB_Leakage`, whose vessels are thin and sparse, recall is high and precision low, below "
              "the Otsu baseline). The same design with 600 fine-tuning steps (scratch vs MIM intensity, 100% "
              "labels, the bundled `vessels-2p` recipe) is reported in `docs/models/vessels-2p_cv.md`, made by "
              "`tpem-seg train study --preset cpu --set finetune_steps=600 --set 'arms=[scratch,intensity]' "
              "--set 'fractions=[1.0]' --set sim.enabled=false --out runs/vessels-2p_cv "
              "--doc docs/models/vessels-2p_cv.md`."]
    lines += ["", "## Commands", "",
              "```bash",
              f"# this report: tpem-seg train study --preset {cfg.preset}"
              + (f" --device {cfg.device}" if cfg.device not in ("auto", PRESETS[cfg.preset].get("device", "auto"))
                 else ""),
              "# the full study on 2 CPU cores (about 75-90 min; re-running skips finished runs, delete the --out "
              "folder to start afresh):",
              "tpem-seg train study --preset cpu",
              "# the same design, longer training and 5 seeds, on a GPU:",
              "tpem-seg train study --preset gpu --device cuda",
              "# one arm by hand, e.g. fold 0, intensity masking, 25% of the labels, seed 0:",
              "tpem-seg train pretrain -c configs/pretrain_vesselnn.yaml --masking intensity -o runs/pre-int",
              "tpem-seg train finetune -c configs/finetune_vesselnn.yaml --pretrained runs/pre-int/last.pt "
              "--label-fraction 0.25 --seed 0 -o runs/ft",
              "tpem-seg train evaluate -c configs/evaluate_vesselnn.yaml --checkpoint runs/ft/best.pt",
              "```", "",
              f"Raw results: `{raw_results_path(cfg).name}` next to this file, a copy of "
              f"`{Path(cfg.out) / 'results.jsonl'}` (one line per run, scores per test volume)."]
    return lines


def number(value: float, spec: str) -> str:
    return format(value, spec) if np.isfinite(value) else "–"


def stage_times(results: Results) -> str:
    """Median wall time of each kind of run, e.g. ``MIM pretraining 0.7 min (6 runs)``."""
    kinds = {"MIM pretraining": ("seconds", lambda r: r["table"].endswith("-pretrain")),
             "fine-tuning": ("train_seconds", lambda r: "train_seconds" in r),
             "evaluation": ("eval_seconds", lambda r: "eval_seconds" in r)}
    parts = []
    for name, (key, chosen) in kinds.items():
        seconds = [r[key] for r in results.rows if chosen(r)]
        if seconds:
            parts.append(f"{name} median {np.median(seconds) / 60:.1f} min (range {min(seconds) / 60:.1f}-"
                         f"{max(seconds) / 60:.1f}, {len(seconds)} runs)")
    return "; ".join(parts) or "none yet"


def compute_minutes(results: Results) -> float:
    """Training and evaluation time recorded in the results (also of runs cached from earlier invocations)."""
    seconds = sum(r.get("seconds", 0.0) + r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)
                  for r in results.rows)
    return seconds / 60


def arm_name(arm: str) -> str:
    return {"scratch": "scratch", "random": "MIM random", "intensity": "MIM intensity",
            "channel": "MIM channel-separated"}.get(arm, arm)


def conclusion(results: Results, cfg: StudyConfig, pretrained: list[str], low: float, high: float) -> str:
    """The plain-words answer to the paper's claim, from the numbers."""
    def mean(arm, f):
        vals = list(unit_scores(results, "vesselnn", arm, f, "dice/vessel").values())
        return float(np.mean(vals)) if vals else float("nan")

    best = max(pretrained, key=lambda a: mean(a, low)) if pretrained else None
    if best is None or not np.isfinite(mean(best, low)):
        return "Not enough results for a conclusion yet."
    gain = mean(best, low) - mean("scratch", low)
    gap = mean(best, low) - mean("scratch", high)
    helped = "helped" if gain > 0.01 else "did not help" if gain > -0.01 else "hurt"
    gap_clause = "" if low == high else (
        f", and it {'closes' if gap > -0.01 else 'does not close'} the gap to training from scratch on {high:.0%} of "
        f"the labels ({mean('scratch', high):.3f}; difference {gap:+.3f})")
    return (f"In plain words: with {low:.0%} of the labels, MIM pretraining ({arm_name(best)}, the better strategy "
            f"here) {helped} (Dice {mean(best, low):.3f} vs {mean('scratch', low):.3f} from scratch){gap_clause}. "
            f"This is at the training budget above on this machine; see the paired tests for whether the "
            f"differences exceed the seed-to-seed noise.")


def sim_table_lines(cfg: StudyConfig, results: Results) -> list[str]:
    sim = cfg.sim
    lines = ["", "## Table 2: simulated two-channel volumes, Dice per class", "",
             f"{sim.n_train} labelled training and {sim.n_test} test volumes from `tpem_seg.sim` "
             f"({'x'.join(map(str, sim.shape))} voxels at {'x'.join(f'{s:g}' for s in sim.spacing)} µm; channel 0 "
             f"vessel dye, channel 1 neurons; classes background/vessel/neuron), plus {sim.n_unlabelled} unlabelled "
             f"ones for pretraining. Pretraining {sim.pretrain_steps} steps with input-space masks (a learnable "
             f"value per channel, mask patch {'x'.join(map(str, cfg.mask_patch))}, ratio {cfg.mask_ratio}): "
             f"`random` masks both channels at the same places, `channel` draws an independent mask per channel. "
             f"Fine-tuning {sim.finetune_steps} steps with {sim.fraction:.0%} of the labels (columns of "
             f"{sim.region_size[0]}x{sim.region_size[1]}). Mean ± sd over test volumes x seeds.", "",
             "| arm | Dice vessel | Dice neuron | clDice vessel |", "|---|---|---|---|"]
    for arm in sim.arms:
        cells = [mean_sd(list(unit_scores(results, "sim", arm, sim.fraction, m).values()))
                 for m in ("dice/vessel", "dice/neuron", "cldice/vessel")]
        lines.append(f"| {arm_name(arm)} | " + " | ".join(cells) + " |")
    if "channel" in sim.arms and "random" in sim.arms:
        lines.append("")
        for metric in ("dice/vessel", "dice/neuron"):
            t = paired_test(unit_scores(results, "sim", "channel", sim.fraction, metric),
                            unit_scores(results, "sim", "random", sim.fraction, metric))
            lines.append("- " + describe_comparison(f"channel-separated − random, {metric}", t))
    return lines
