"""The study's design: the folds, the presets, the config, and the volumes it runs on."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from tpem_seg.errors import TpemSegError
from tpem_seg.train.config import SimulatedSpec, VolumeSpec, apply_override, from_dict, parse_override
from tpem_seg.util.numbers import parse_numbers

#: Test volumes per fold: each pair mixes a sparse and a dense labelling and two labs.
FOLDS = [["burgess2014_bbbDisruption", "poon2015_plaqueVessels"],
         ["burgess2014_noisySparseVessels", "poon2015_BBB_Leakage"],
         ["burgess2014_tgMouse", "santos2015_mixedSizelowContrastVessels"]]


@dataclass
class LabelBudget:
    """A share of the annotation, named as the report names it.

    ``unit = "region"``: each training volume keeps the labels of ``fraction`` of its full-depth
    y-x columns (``StudyConfig.region_size``); ``"volume"``: ``fraction`` of the fold's labelled
    volumes keep all their labels (at least one), the others none.
    """

    name: str
    fraction: float
    unit: str = "region"


@dataclass
class Cell:
    """One fine-tuning arm (``scratch`` or a masking strategy) at one label budget (its name)."""

    arm: str
    labels: str


@dataclass
class Primary:
    """The pre-registered comparison: ``arm`` at ``low`` labels against scratch at ``full`` labels,
    equivalent if the 90% CI of the per-volume Dice difference lies within +-``margin``."""

    arm: str = "random"
    low: str = "25%"
    full: str = "100%"
    margin: float = 0.02


@dataclass
class Diagnostics:
    """Checks of what pretraining learnt and what the ViT carries (:mod:`.diagnostics`).

    l1_batches: batches of ``pretrain_batch`` tiles from each fold's *test* volumes (never seen in
        pretraining) on which the MIM model's masked L1 is compared with the trivial predictor.
    probe_folds, probe_labels, probe_steps: frozen-encoder probe: the decoder alone is trained
        (encoder learning rate 0) on a pretrained and on a random encoder.
    skip_labels: the scratch cell whose trained models are re-scored with the ViT's outputs zeroed.
    """

    enabled: bool = True
    l1_batches: int = 4
    probe_folds: list[int] = field(default_factory=lambda: [0])
    probe_labels: str = "25%"
    probe_steps: int = 150
    skip_labels: str = "100%"


@dataclass
class SimStudy:
    """Table 2: simulated two-channel volumes (vessel, neuron) -> background/vessel/neuron."""

    enabled: bool = True
    model: str = "unetr-t16"
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
    finetune_batch: int = 2


def default_budgets() -> list[LabelBudget]:
    return [LabelBudget("10%", 0.10), LabelBudget("25%", 0.25), LabelBudget("1 of 4 volumes", 0.25, "volume"),
            LabelBudget("100%", 1.0)]


def default_cells() -> list[Cell]:
    # most important first: a run cut short by time has the primary comparison and the gap
    return [Cell("scratch", "100%"), Cell("random", "25%"), Cell("scratch", "25%"), Cell("intensity", "25%"),
            Cell("scratch", "10%"), Cell("random", "10%"), Cell("scratch", "1 of 4 volumes"),
            Cell("random", "1 of 4 volumes")]


def default_extra_unlabelled() -> list[VolumeSpec]:
    # real two-photon data beyond the labelled set: the STPT crop's signal channel (BSD-3-Clause)
    return [VolumeSpec(image="../shared/data/cellfinder_stpt/cellfinder_crop_2ch_CZYX.tif", axes="CZYX",
                       spacing=(5.0, 2.0, 2.0), channels=[0], name="cellfinder_stpt_signal")]


def default_simulated_unlabelled() -> SimulatedSpec:
    # the simulator's vessel channel alone, at the real volumes' ~1 um in-plane voxel size
    return SimulatedSpec(count=4, shape=(16, 256, 256), spacing=(5.0, 1.0, 1.0), seed=2000, channels=[0])


@dataclass
class StudyConfig:
    """What the study runs; the presets below fill it for a 2-core CPU, a GPU or a smoke test.

    Everything that decides a result (budgets, cells, the primary comparison and its margin,
    the encoder's learning-rate scale) is fixed here, before any run. ``workers``: processes that
    split the folds between them (1: everything in this process); ``threads``: torch threads of each.
    """

    preset: str = "cpu"
    data: str = "../shared/data/vesselnn_2pm"
    out: str = "runs/label_efficiency"
    doc: str = "docs/label_efficiency.md"
    model: str = "unetr-t16"
    device: str = "auto"
    threads: int | None = None
    workers: int = 1
    folds: list[list[str]] = field(default_factory=lambda: [list(f) for f in FOLDS])
    seeds: list[int] = field(default_factory=lambda: [0])
    budgets: list[LabelBudget] = field(default_factory=default_budgets)
    cells: list[Cell] = field(default_factory=default_cells)
    primary: Primary = field(default_factory=Primary)
    region_size: tuple[int, int] = (128, 128)
    max_yx: int | None = None
    extra_unlabelled: list[VolumeSpec] = field(default_factory=default_extra_unlabelled)
    simulated_unlabelled: SimulatedSpec = field(default_factory=default_simulated_unlabelled)
    pretrain_steps: int = 3000
    pretrain_batch: int = 8
    pretrain_lr: float = 5e-4
    mask_ratio: float = 0.75
    mask_patch: tuple[int, int, int] = (8, 8, 8)
    finetune_steps: int = 250  # the pilot: 0.724 / 0.770 / 0.771 held-out Dice at 100 / 250 / 500 steps
    finetune_batch: int = 2  # not 1: PyTorch's CPU convolution takes a slow non-oneDNN path at batch 1
    finetune_lr: float = 3e-3
    encoder_lr_scale: float = 0.5
    warmup_steps: int = 20
    eval_overlap: float = 0.0
    eval_batch: int = 4
    keep_checkpoints: bool = False
    pilot_steps: list[int] = field(default_factory=lambda: [100, 250, 500])
    pilot_labels: str = "100%"
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    sim: SimStudy = field(default_factory=SimStudy)

    def budget(self, name: str) -> LabelBudget:
        """The label budget called ``name``."""
        for b in self.budgets:
            if b.name == name:
                return b
        raise TpemSegError(f"label budget {name!r} is not among {[b.name for b in self.budgets]}; fix the cells")

    def check(self) -> None:
        """Raise TpemSegError for a design whose cells or comparisons name unknown budgets or arms."""
        names = [self.primary.low, self.primary.full, self.pilot_labels, self.diagnostics.probe_labels,
                 self.diagnostics.skip_labels] + [c.labels for c in self.cells]
        for name in names:
            self.budget(name)
        for c in self.cells:
            if c.arm not in ARMS:
                raise TpemSegError(f"arm {c.arm!r} unknown; use one of {', '.join(ARMS)}")
        if not 0.0 < self.primary.margin < 1.0:
            raise TpemSegError(f"equivalence margin {self.primary.margin} must be in (0, 1) Dice")

    def ordered_cells(self) -> list[Cell]:
        """The cells, those of the primary comparison and the gap first: scratch full, scratch low (neither
        waits for a pretraining), then the primary arm low."""
        first = [c for c in (Cell("scratch", self.primary.full), Cell("scratch", self.primary.low),
                             Cell(self.primary.arm, self.primary.low)) if c in self.cells]
        return first + [c for c in self.cells if c not in first]


#: Fine-tuning arms on the real vessels: from scratch or from an encoder pretrained with that masking.
ARMS = ("scratch", "random", "intensity")

PRESETS: dict[str, dict[str, Any]] = {
    # 3 folds x 8 cells x 1 seed = 24 fine-tunes, 6 pretrainings, the diagnostics and table 2, sized from the
    # pilot's CPU seconds per step for about 60 min on 2 idle cores as three 1-thread processes, one per fold
    # (see the notes); the last also runs table 2 and the probe sits on its fold
    "cpu": {"threads": 1, "workers": 3, "diagnostics": {"probe_folds": [2]}},
    # the same design on 16x128x128 tiles (64 ViT tokens; too slow to fine-tune on 2 CPU cores) with
    # longer training and 3 seeds, for one GPU (not yet run on one)
    "gpu": {"device": "cuda", "model": "unetr-t16w", "seeds": [0, 1, 2], "pretrain_steps": 3000, "pretrain_batch": 32,
            "finetune_steps": 600, "finetune_batch": 4, "warmup_steps": 50, "eval_overlap": 0.25,
            "diagnostics": {"probe_folds": [0, 1, 2], "probe_steps": 300, "l1_batches": 16},
            "sim": {"pretrain_steps": 2000, "finetune_steps": 600, "n_unlabelled": 12}},
    # every code path once, on crops, in a few minutes: numbers mean nothing
    "smoke": {"out": "runs/label_efficiency_smoke", "doc": "runs/label_efficiency_smoke/label_efficiency.md",
              "folds": [FOLDS[0]], "max_yx": 128, "region_size": [64, 64], "pretrain_steps": 4,
              "pretrain_batch": 2, "finetune_steps": 4, "warmup_steps": 2, "pilot_steps": [2, 4],
              "simulated_unlabelled": {"count": 1, "shape": [16, 128, 128], "channels": [0]},
              "diagnostics": {"probe_steps": 3, "l1_batches": 1},
              "sim": {"n_train": 2, "n_test": 1, "n_unlabelled": 0, "shape": [16, 64, 64], "pretrain_steps": 3,
                      "finetune_steps": 3}},
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
    cfg = from_dict(StudyConfig, values, where="study")
    cfg.check()
    return cfg


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
