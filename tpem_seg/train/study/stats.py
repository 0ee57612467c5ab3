"""Paired statistics over (test volume, seed) units, and the findings they support, in words."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tpem_seg.train.study.design import StudyConfig, arm_name
from tpem_seg.train.study.results import Results, unit_scores


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


def number(value: float, spec: str) -> str:
    return format(value, spec) if np.isfinite(value) else "–"


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
