"""The pilot that fixes the fine-tuning length before the study runs, and measures what a run costs.

Scratch fine-tuning at ``cfg.pilot_labels`` on fold 0's training volumes but one, for each length
in ``cfg.pilot_steps`` (whole schedules: the cosine decay depends on the length), scored on the
held-out training volume: no test volume of any fold is looked at to choose the length. A short
pretraining of each strategy measures the seconds per pretraining step. The rows (tables
``pilot`` and ``pilot-pretrain``) go into the study's results, so the report shows them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tpem_seg.train.study.arms import finetune_and_score, finetune_config, pretrain_once, vessel_pretrain_config
from tpem_seg.train.study.design import StudyConfig
from tpem_seg.train.study.results import Results

log = logging.getLogger(__name__)

#: Steps of the pretraining whose time per step the pilot measures.
PRETRAIN_PILOT_STEPS = 40


def run_pilot(cfg: StudyConfig, results: Results, specs: dict) -> list[dict]:
    """Run the pilot's missing runs; returns its fine-tuning rows (held-out Dice per length)."""
    test = set(cfg.folds[0])
    train = [specs[n] for n in specs if n not in test]
    held_out, fit = train[-1], train[:-1]
    out = Path(cfg.out) / "pilot"
    for masking in ("random", "intensity"):
        pc = vessel_pretrain_config(cfg, fit, masking, out / f"pretrain-{masking}", steps=PRETRAIN_PILOT_STEPS)
        pretrain_once(pc, results, "pilot", 0)
    budget = cfg.budget(cfg.pilot_labels)
    for steps in cfg.pilot_steps:
        key = dict(table="pilot", fold=0, arm="scratch", labels=budget.name, seed=0, steps=steps)
        if results.has(**key):
            continue
        ft = finetune_config(cfg, fit, None, budget, 0, out / f"finetune-{steps}", steps=steps,
                             log_every=max(1, steps // 5))
        row = {**key, "held_out": held_out.name, **finetune_and_score(cfg, ft, [held_out])}
        results.add(row)
        log.info("pilot: %d steps, held-out Dice %.4f, %.2f s/step", steps,
                 row["per_volume"][held_out.name]["dice/vessel"], row["train_seconds"] / steps)
    return results.select(table="pilot")
