"""The study's design: the folds, the presets, the config, and the volumes it runs on."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from tpem_seg.errors import TpemSegError
from tpem_seg.train.config import VolumeSpec, apply_override, from_dict, parse_override
from tpem_seg.util.numbers import parse_numbers

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
        values["seeds"] = list(parse_numbers(seeds, "--seeds", kind=int, example="0,1,2"))
    return from_dict(StudyConfig, values, where="study")


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


def arm_name(arm: str) -> str:
    """How the report names an arm."""
    return {"scratch": "scratch", "random": "MIM random", "intensity": "MIM intensity",
            "channel": "MIM channel-separated"}.get(arm, arm)
