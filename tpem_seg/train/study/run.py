"""Running the study: every cell of the design in priority order, the diagnostics, table 2, the report.

Order (so that a run cut short by time has the most important results): for each seed, the
cells of the primary comparison and the gap (scratch at full and at low labels, then the primary
arm at low labels) on every fold; then the diagnostics of the primary arm; then the other cells;
then the remaining diagnostics; then table 2. Each
masking strategy is pretrained once per fold, when a cell first needs it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

from tpem_seg.errors import TpemSegError
from tpem_seg.train.config import VolumeSpec
from tpem_seg.train.study.arms import finetune_and_score, finetune_config, finetune_dir, fold_split, \
    pretrain_config, pretrain_once, vessel_pretrain_config
from tpem_seg.train.study.design import Cell, LabelBudget, StudyConfig, cropped_specs, simulated_specs, \
    vesselnn_specs
from tpem_seg.train.study.diagnostics import run_diagnostics
from tpem_seg.train.study.report import write_report
from tpem_seg.train.study.results import Results
from tpem_seg.util import atomic

log = logging.getLogger(__name__)


def study_specs(cfg: StudyConfig) -> dict[str, VolumeSpec]:
    """The labelled real volumes (cropped for the smoke preset), checked against the folds."""
    specs = vesselnn_specs(cfg.data)
    if cfg.max_yx:
        specs = cropped_specs(specs, cfg.max_yx, Path(cfg.out) / "crops")
    unknown = sorted({n for fold in cfg.folds for n in fold} - set(specs))
    if unknown:
        raise TpemSegError(f"fold volumes {unknown} are not in {cfg.data}/volumes.csv; fix the folds")
    return specs


def run_study(cfg: StudyConfig, report_only: bool = False, folds: Sequence[int] | None = None) -> Path:
    """Run every run not yet in the results (none with ``report_only``), then write the report.

    ``folds``: run only these folds (indices into ``cfg.folds``; default all), so that processes
    sharing the work folder can split the folds between them; each appends to the same results
    and the report covers every fold.
    """
    started = time.perf_counter()
    out = Path(cfg.out)
    results = Results(out / "results.jsonl")
    specs = study_specs(cfg)
    otsu = otsu_scores(specs.values(), out / "otsu.json")
    active = list(range(len(cfg.folds))) if folds is None else list(folds)
    unknown = sorted(set(active) - set(range(len(cfg.folds))))
    if unknown:
        raise TpemSegError(f"folds {unknown} do not exist; the study has folds 0-{len(cfg.folds) - 1}")
    if report_only:
        pass
    elif folds is None and cfg.workers > 1:
        run_workers(cfg)
    else:
        run_cells(cfg, results, specs, active)
        if cfg.sim.enabled:
            run_sim_table(cfg, results)
    seconds = time.perf_counter() - started
    # read again: other processes may have added rows meanwhile
    doc = write_report(cfg, Results(results.path), otsu, specs, seconds)
    log.info("study done in %.1f min; report %s", seconds / 60, doc)
    return doc


def run_workers(cfg: StudyConfig) -> None:
    """Split the folds between ``cfg.workers`` processes (round robin; the last also runs table 2) and
    wait for all. Each appends to the shared results as its runs finish. On 2 shared cores, 1-thread
    processes side by side get more done than one process with 2 threads (see the notes)."""
    import multiprocessing

    n = min(cfg.workers, len(cfg.folds))
    groups = [list(range(len(cfg.folds)))[i::n] for i in range(n)]
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    workers = [context.Process(target=study_worker, args=(cfg, group, i == n - 1), name=f"study-folds-{group}")
               for i, group in enumerate(groups)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join()
    finally:
        for w in workers:  # on an interrupt: stop the others too
            if w.is_alive():
                w.terminate()
                w.join()
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        raise TpemSegError(f"study worker(s) {failed} failed; see their log above, fix and rerun (finished runs "
                           f"are kept)")


def study_worker(cfg: StudyConfig, folds: list[int], with_sim: bool) -> None:
    """One worker process: its folds' cells and diagnostics, and table 2 if ``with_sim``."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s folds {folds} %(name)s: %(message)s")
    results = Results(Path(cfg.out) / "results.jsonl")
    run_cells(cfg, results, study_specs(cfg), folds)
    if with_sim and cfg.sim.enabled:
        run_sim_table(cfg, results)


def run_cells(cfg: StudyConfig, results: Results, specs: dict[str, VolumeSpec], folds: list[int]) -> None:
    encoders = Encoders(cfg, results, specs)
    cells = cfg.ordered_cells()
    primary = sum(c in cells for c in (Cell("scratch", cfg.primary.full), Cell("scratch", cfg.primary.low),
                                       Cell(cfg.primary.arm, cfg.primary.low)))
    for i, seed in enumerate(cfg.seeds):
        for cell in cells[:primary]:
            run_cell(cfg, results, specs, encoders, cell, seed, folds)
        if i == 0 and cfg.diagnostics.enabled:
            run_diagnostics(cfg, results, specs, encoders.get, folds, [cfg.primary.arm])
        for cell in cells[primary:]:
            run_cell(cfg, results, specs, encoders, cell, seed, folds)
    if cfg.diagnostics.enabled:  # the masked L1 of the other strategies' encoders, now pretrained
        run_diagnostics(cfg, results, specs, encoders.get, folds)


class Encoders:
    """Each masking strategy's encoder per fold, pretrained on first use (and cached on disk)."""

    def __init__(self, cfg: StudyConfig, results: Results, specs: dict[str, VolumeSpec]):
        self.cfg, self.results, self.specs = cfg, results, specs
        self.paths: dict[tuple[int, str], str] = {}

    def get(self, fold: int, masking: str) -> str:
        if (fold, masking) not in self.paths:
            train, _ = fold_split(self.cfg, self.specs, fold)
            pc = vessel_pretrain_config(self.cfg, train, masking, Path(self.cfg.out) / "pretrain" /
                                        f"fold{fold}-{masking}")
            self.paths[(fold, masking)] = pretrain_once(pc, self.results, "vesselnn", fold)
        return self.paths[(fold, masking)]


def run_cell(cfg: StudyConfig, results: Results, specs: dict[str, VolumeSpec], encoders: Encoders, cell: Cell,
             seed: int, folds: list[int]) -> None:
    """One cell on each of ``folds``: fine-tune (from scratch or the fold's encoder), score the test volumes."""
    budget = cfg.budget(cell.labels)
    for k in folds:
        key = dict(table="vesselnn", fold=k, arm=cell.arm, labels=cell.labels, seed=seed)
        if results.has(**key):
            continue
        train, test = fold_split(cfg, specs, k)
        pretrained = None if cell.arm == "scratch" else encoders.get(k, cell.arm)
        # the scratch models of the skip diagnostic are kept for it
        keep = cell.arm == "scratch" and cell.labels == cfg.diagnostics.skip_labels and seed == cfg.seeds[0]
        ft = finetune_config(cfg, train, pretrained, budget, seed, finetune_dir(cfg, k, cell, seed))
        results.add({**key, "fraction": budget.fraction, "unit": budget.unit,
                     **finetune_and_score(cfg, ft, test, keep=keep)})


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
    atomic.write_text(cache, json.dumps(scores, indent=2))  # processes splitting the folds may race here
    return scores


def run_sim_table(cfg: StudyConfig, results: Results) -> None:
    """Table 2: pretrain (random / channel-separated, input-space masks) on simulated two-channel volumes,
    fine-tune with a share of the labels, score vessel and neuron Dice on held-out simulated volumes."""
    sim = cfg.sim
    out = Path(cfg.out) / "sim"
    train, test, extra = simulated_specs(sim, out / "volumes")
    unlabelled = [replace(s, labels=None) for s in train + extra]
    encoders = {arm: pretrain_once(pretrain_config(cfg, unlabelled, arm, out / f"pretrain-{arm}", in_channels=2,
                                                   steps=sim.pretrain_steps, mask_space="input", model=sim.model),
                                   results, "sim", 0)
                for arm in sim.arms if arm != "scratch"}
    budget = LabelBudget(f"{sim.fraction:.0%}", sim.fraction)
    for seed in cfg.seeds:
        for arm in sim.arms:
            key = dict(table="sim", fold=0, arm=arm, labels=budget.name, seed=seed)
            if results.has(**key):
                continue
            ft = finetune_config(cfg, train, encoders.get(arm), budget, seed, out / f"finetune-{arm}-s{seed}",
                                 model=sim.model, in_channels=2, classes=["background", "vessel", "neuron"],
                                 binary_labels=False, region_size=sim.region_size, steps=sim.finetune_steps,
                                 batch_size=sim.finetune_batch, log_every=max(1, sim.finetune_steps // 5))
            results.add({**key, **finetune_and_score(cfg, ft, test)})
