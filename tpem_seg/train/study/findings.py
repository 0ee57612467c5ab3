"""The study's comparisons and their plain-words reading, computed from the results.

The primary comparison (pre-registered in :class:`~tpem_seg.train.study.design.Primary`) is an
equivalence test at level 0.05, not corrected. The secondary family, Holm-corrected together:
equivalence of every other pretrained arm at the low budget with scratch at full labels, and
each pretrained cell against scratch at the same budget (two-sided paired t-test). The family
is the planned one, also when some of its cells did not run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tpem_seg.train.study.design import StudyConfig, arm_name
from tpem_seg.train.study.results import Results, unit_scores
from tpem_seg.train.study.stats import gap_fraction, holm, paired_differences, paired_t, tost, volume_means

METRIC = "dice/vessel"


@dataclass
class Comparison:
    """One comparison ``a − b`` of two cells over test volumes: ``kind`` is ``equivalence`` or ``difference``."""

    name: str
    kind: str
    test: dict
    p_holm: float = float("nan")


def cell_scores(results: Results, arm: str, labels: str) -> dict:
    return unit_scores(results, "vesselnn", arm, labels, METRIC)


def pretrained_cells(cfg: StudyConfig) -> list[tuple[str, str]]:
    return [(c.arm, c.labels) for c in cfg.cells if c.arm != "scratch"]


def primary_comparison(cfg: StudyConfig, results: Results) -> Comparison:
    p = cfg.primary
    d = paired_differences(cell_scores(results, p.arm, p.low), cell_scores(results, "scratch", p.full))
    return Comparison(f"{arm_name(p.arm)} {p.low} − scratch {p.full}", "equivalence",
                      tost(list(d.values()), p.margin))


def secondary_comparisons(cfg: StudyConfig, results: Results) -> list[Comparison]:
    """The secondary family with Holm-adjusted p-values."""
    p = cfg.primary
    scratch_budgets = {c.labels for c in cfg.cells if c.arm == "scratch"}
    out = []
    for arm, labels in pretrained_cells(cfg):
        if labels == p.low and arm != p.arm:
            d = paired_differences(cell_scores(results, arm, labels), cell_scores(results, "scratch", p.full))
            out.append(Comparison(f"{arm_name(arm)} {labels} − scratch {p.full}", "equivalence",
                                  tost(list(d.values()), p.margin)))
    for arm, labels in pretrained_cells(cfg):
        if labels in scratch_budgets and labels != p.full:
            d = paired_differences(cell_scores(results, arm, labels), cell_scores(results, "scratch", labels))
            out.append(Comparison(f"{arm_name(arm)} {labels} − scratch {labels}", "difference",
                                  paired_t(list(d.values()))))
    # the family is the planned one: a comparison without results counts as p = 1 (it cannot reject),
    # so a cut run does not shrink the correction
    pvalues = [c.test["p"] if np.isfinite(c.test["p"]) else 1.0 for c in out]
    for c, adjusted in zip(out, holm(pvalues)):
        c.p_holm = adjusted if np.isfinite(c.test["p"]) else float("nan")
    return out


def gap_fractions(cfg: StudyConfig, results: Results) -> list[tuple[str, dict]]:
    """For each pretrained cell below full labels: the share of scratch's gap to full labels it closes."""
    full = volume_means(cell_scores(results, "scratch", cfg.primary.full))
    out = []
    for arm, labels in pretrained_cells(cfg):
        if labels == cfg.primary.full:
            continue
        low = volume_means(cell_scores(results, "scratch", labels))
        if low:
            out.append((f"{arm_name(arm)} {labels}", gap_fraction(volume_means(cell_scores(results, arm, labels)),
                                                                  low, full)))
    return out


def equivalence_sentence(c: Comparison) -> str:
    t = c.test
    if not np.isfinite(t["p"]):
        return f"{c.name}: too few test volumes ({t['n']}) for a test."
    ci = f"90% CI [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]"
    if t["equivalent"]:
        return (f"{c.name}: equivalent within ±{t['margin']:g} Dice (mean difference {t['mean_diff']:+.3f}, {ci} "
                f"inside the margin, TOST p = {t['p']:.3g}, n = {t['n']} test volumes).")
    return (f"{c.name}: equivalence not shown (mean difference {t['mean_diff']:+.3f}, {ci} is not inside "
            f"±{t['margin']:g}, TOST p = {t['p']:.3g}, n = {t['n']} test volumes).")


def conclusion(cfg: StudyConfig, results: Results, vit_drop: float | None) -> list[str]:
    """The plain-words answer to the paper's claim, from the numbers (one sentence each)."""
    primary = primary_comparison(cfg, results)
    if not np.isfinite(primary.test["p"]):
        return ["Not enough finished runs for the primary comparison yet."]
    p = cfg.primary
    secondary = {c.name: c for c in secondary_comparisons(cfg, results)}
    same = secondary.get(f"{arm_name(p.arm)} {p.low} − scratch {p.low}")
    gaps = dict(gap_fractions(cfg, results))
    gap = gaps.get(f"{arm_name(p.arm)} {p.low}")
    t = primary.test
    ci = f"the 90% CI of the difference, [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}],"
    verdict = f"supported: {ci} is inside" if t["equivalent"] else f"not supported: {ci} is not inside"
    lines = [f"The paper's claim ({arm_name(p.arm)} pretraining + {p.low} of the labels equivalent to scratch with "
             f"{p.full}) is {verdict} ±{p.margin:g} Dice (n = {t['n']} test volumes)."]
    if same is not None and np.isfinite(same.test["p"]):
        d = same.test
        verdict = ("better than" if same.p_holm < 0.05 and d["mean_diff"] > 0 else
                   "worse than" if same.p_holm < 0.05 else "not distinguishable from")
        lines.append(f"At {p.low} of the labels, {arm_name(p.arm)} pretraining is {verdict} training from scratch "
                     f"(mean Dice difference {d['mean_diff']:+.3f}, 95% CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], "
                     f"dz = {d['dz']:+.2f}, Holm-adjusted p = {same.p_holm:.3g}).")
    if gap and np.isfinite(gap["fraction"]):
        share = (f"It closes {gap['fraction']:.0%} of" if gap["fraction"] >= 0 else
                 f"It closes none of it: its share is {gap['fraction']:.0%} (below scratch at the same labels) of")
        lines.append(f"{share} the {gap['gap']:.3f}-Dice gap between scratch at {p.low} and at {p.full} (95% "
                     f"bootstrap CI {gap['ci_low']:.0%} to {gap['ci_high']:.0%}, over {gap['n']} volumes).")
    elif gap:
        lines.append(f"The gap between scratch at {p.low} and at {p.full} is {gap['gap']:+.3f} Dice: no positive "
                     f"gap for pretraining to close, so more labels did not help at this training length.")
    if vit_drop is not None:
        lines.append(f"Zeroing the ViT's outputs in the trained scratch models changes their Dice by {vit_drop:+.3f} "
                     f"on average (table \"ViT zeroed\"): that much of their Dice comes through the ViT; the rest "
                     f"comes from the decoder's convolutional path on the raw input.")
    return lines
