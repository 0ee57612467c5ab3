"""The study's statistics, with the test volume as the unit: seeds are averaged per volume first.

Why volumes and not (volume, seed) pairs: the seeds of one volume share its image and labels,
so they are not independent draws; treating them as such shrinks every CI. With one seed per
cell (the CPU preset) the two coincide.

- :func:`tost`: the paper's "statistically similar" as an equivalence test (two one-sided
  t-tests, Schuirmann 1987) with a margin fixed before the runs, and the matching 90% CI.
- :func:`paired_t`: a difference test with its 95% CI and the paired effect size dz.
- :func:`gap_fraction`: the share of the low-to-full-labels gap that pretraining closes, with a
  percentile bootstrap CI over volumes.
- :func:`holm`: Holm's step-down adjustment over a family of p-values.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

#: ``{(volume, seed): score}``, as :func:`tpem_seg.train.study.results.unit_scores` returns.
UnitScores = Mapping[tuple[str, int], float]


def volume_means(scores: UnitScores) -> dict[str, float]:
    """``{volume: mean over its seeds}``."""
    by_volume: dict[str, list[float]] = {}
    for (volume, _seed), value in scores.items():
        by_volume.setdefault(volume, []).append(value)
    return {v: float(np.mean(vals)) for v, vals in by_volume.items()}


def paired_differences(a: UnitScores, b: UnitScores) -> dict[str, float]:
    """Per-volume ``mean_a - mean_b`` over the volumes both have (seed means first)."""
    ma, mb = volume_means(a), volume_means(b)
    return {v: ma[v] - mb[v] for v in sorted(set(ma) & set(mb))}


def _mean_se(d: np.ndarray) -> tuple[float, float]:
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def tost(differences: Sequence[float], margin: float, alpha: float = 0.05) -> dict[str, float]:
    """Equivalence of the mean paired difference to zero within ``(-margin, +margin)``.

    Two one-sided t-tests on ``n - 1`` degrees of freedom: H0 low ``mean <= -margin`` (p_low) and
    H0 high ``mean >= +margin`` (p_high); the TOST p-value is their maximum. Equivalence at
    level ``alpha`` holds exactly when the ``1 - 2 alpha`` (90%) CI lies inside the margin.
    Fewer than 3 differences, or no spread: NaNs and ``equivalent = False``.
    """
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    out = {"n": len(d), "margin": margin, "mean_diff": float(d.mean()) if len(d) else float("nan")}
    if len(d) < 3 or np.allclose(d, d[0]):
        return {**out, "ci_low": float("nan"), "ci_high": float("nan"), "p_low": float("nan"),
                "p_high": float("nan"), "p": float("nan"), "equivalent": False}
    mean, se = _mean_se(d)
    df = len(d) - 1
    p_low = float(stats.t.sf((mean + margin) / se, df))
    p_high = float(stats.t.cdf((mean - margin) / se, df))
    half = float(stats.t.ppf(1 - alpha, df)) * se
    p = max(p_low, p_high)
    return {**out, "ci_low": mean - half, "ci_high": mean + half, "p_low": p_low, "p_high": p_high, "p": p,
            "equivalent": bool(p < alpha)}


def paired_t(differences: Sequence[float]) -> dict[str, float]:
    """Two-sided one-sample t-test of the paired differences against 0, its 95% CI, and
    Cohen's ``dz = mean / sd`` (the paired effect size)."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    out = {"n": len(d), "mean_diff": float(d.mean()) if len(d) else float("nan")}
    if len(d) < 3 or np.allclose(d, d[0]):
        return {**out, "ci_low": float("nan"), "ci_high": float("nan"), "p": float("nan"), "dz": float("nan")}
    mean, se = _mean_se(d)
    half = float(stats.t.ppf(0.975, len(d) - 1)) * se
    return {**out, "ci_low": mean - half, "ci_high": mean + half, "p": float(stats.ttest_1samp(d, 0.0).pvalue),
            "dz": mean / float(d.std(ddof=1))}


def gap_fraction(pretrained_low: Mapping[str, float], scratch_low: Mapping[str, float],
                 scratch_full: Mapping[str, float], n_boot: int = 10000, seed: int = 0) -> dict[str, float]:
    """The share of the scratch low-to-full gap that pretraining closes, over common volumes:

        (mean pretrained_low - mean scratch_low) / (mean scratch_full - mean scratch_low)

    1 closes the gap, 0 no gain, negative hurts. The 95% CI is the percentile bootstrap over
    volumes (resampled with replacement, the three means taken on the same resample); resamples
    whose gap is not positive have no defined fraction and are counted in ``undefined``.
    """
    volumes = sorted(set(pretrained_low) & set(scratch_low) & set(scratch_full))
    p, lo, hi = (np.array([m[v] for v in volumes]) for m in (pretrained_low, scratch_low, scratch_full))
    out = {"n": len(volumes), "gap": float(hi.mean() - lo.mean()) if volumes else float("nan")}
    if len(volumes) < 2 or out["gap"] <= 0:
        return {**out, "fraction": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "undefined": float("nan")}
    idx = np.random.default_rng(seed).integers(0, len(volumes), size=(n_boot, len(volumes)))
    gaps = hi[idx].mean(axis=1) - lo[idx].mean(axis=1)
    gains = p[idx].mean(axis=1) - lo[idx].mean(axis=1)
    defined = gaps > 0
    fractions = gains[defined] / gaps[defined]
    return {**out, "fraction": float((p.mean() - lo.mean()) / out["gap"]),
            "ci_low": float(np.percentile(fractions, 2.5)), "ci_high": float(np.percentile(fractions, 97.5)),
            "undefined": float(1.0 - defined.mean())}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaNs stay NaN and are not counted).

    Sorted ascending, the i-th of m p-values (i from 0) becomes ``max_{j<=i} (m - j) p_(j)``,
    capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(len(p), np.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for i, j in enumerate(order):
        running = max(running, (m - i) * p[j])
        adjusted[j] = min(1.0, running)
    return adjusted.tolist()


def mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` to 3 decimals, ``–`` for none."""
    if not len(values):
        return "–"
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {sd:.3f}"


def number(value: float, spec: str) -> str:
    """``value`` formatted, ``–`` for NaN or infinity."""
    return format(value, spec) if np.isfinite(value) else "–"
