"""``tpem-seg demo``: simulate a two-channel stack, segment it, show and score the result.

Needs no training stack (the simulator is numpy/scipy) and no data: a new user
sees the whole path, file in to labels out, in well under a minute on a CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpem_seg.io import read_volume
from tpem_seg.io.png import write_png
from tpem_seg.models.package import open_package
from tpem_seg.runtime.preview import overlay_panels
from tpem_seg.runtime.segmenter import RunSummary, Segmenter
from tpem_seg.train.metrics import dice_per_class
from tpem_seg.sim import save_simulated, simulate_volume

log = logging.getLogger(__name__)

DEFAULT_MODEL = "tpem-2ch"
DEFAULT_SHAPE = (24, 256, 256)


@dataclass
class DemoResult:
    """Where the demo wrote its files, its Dice per class against the simulated truth, and the run."""

    volume: Path
    labels: Path
    truth: Path
    overlay: Path
    dice: dict[str, float]
    summary: RunSummary


def run_demo(out_dir: str | os.PathLike = "tpem-demo", model: str = DEFAULT_MODEL,
             shape: tuple[int, int, int] = DEFAULT_SHAPE, seed: int = 2024, backend: str = "auto",
             device: str = "auto") -> DemoResult:
    """Simulate at the model's voxel size, segment the file, write an MIP overlay PNG, score."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    package = open_package(model)
    spacing = package.manifest.spacing or (2.0, 1.0, 1.0)
    sim = simulate_volume(shape=shape, spacing=spacing, seed=seed)
    volume_path, truth_path = out / "demo_volume.tif", out / "demo_truth.tif"
    save_simulated(sim, volume_path, truth_path)
    labels_path = out / "demo_labels.tif"
    with Segmenter(package, backend=backend, device=device) as segmenter:
        summary = segmenter.segment_file(volume_path, labels_path)
    labels = np.asarray(read_volume(labels_path).data)
    overlay = write_png(out / "demo_overlay.png", overlay_panels(sim.image, sim.labels, labels))
    dice = dice_per_class(labels, sim.labels, package.manifest.classes)
    return DemoResult(volume_path, labels_path, truth_path, overlay, dice, summary)
