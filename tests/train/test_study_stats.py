"""The study's statistics against scipy's own tests and hand-computed values."""

import numpy as np
import pytest

from tpem_seg.train.study.stats import gap_fraction, holm, paired_differences, paired_t, tost, volume_means

stats = pytest.importorskip("scipy.stats")


def test_tost_is_two_one_sided_t_tests(rng):
    d = rng.normal(0.004, 0.01, 8)
    margin = 0.02
    t = tost(d, margin)
    assert t["p_low"] == pytest.approx(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
    assert t["p_high"] == pytest.approx(stats.ttest_1samp(d, margin, alternative="less").pvalue)
    assert t["p"] == max(t["p_low"], t["p_high"])
    # the 90% CI is scipy's 90% t interval, and equivalence is exactly "CI inside the margin"
    lo, hi = stats.t.interval(0.90, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((lo, hi))
    assert t["equivalent"] == (-margin < lo and hi < margin)


def test_tost_rejects_equivalence_outside_the_margin(rng):
    assert not tost(rng.normal(0.05, 0.01, 8), 0.02)["equivalent"]
    assert tost(rng.normal(0.0, 0.001, 8), 0.02)["equivalent"]
    assert not tost([0.01, 0.02], 0.02)["equivalent"] and np.isnan(tost([0.01, 0.02], 0.02)["p"])


def test_paired_t_matches_scipy_and_cohen_dz(rng):
    a, b = rng.normal(0.7, 0.05, 10), rng.normal(0.68, 0.05, 10)
    t = paired_t(a - b)
    assert t["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert t["dz"] == pytest.approx(np.mean(a - b) / np.std(a - b, ddof=1))
    lo, hi = stats.t.interval(0.95, 9, loc=np.mean(a - b), scale=stats.sem(a - b))
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((lo, hi))


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.02, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.02) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_seeds_are_averaged_per_volume_before_pairing():
    a = {("v1", 0): 0.6, ("v1", 1): 0.8, ("v2", 0): 0.5}
    b = {("v1", 0): 0.5, ("v2", 0): 0.4, ("v2", 1): 0.6, ("v3", 0): 0.9}
    assert volume_means(a) == pytest.approx({"v1": 0.7, "v2": 0.5})
    assert paired_differences(a, b) == pytest.approx({"v1": 0.2, "v2": 0.0})


def test_gap_fraction_exact_when_every_volume_closes_the_same_share(rng):
    low = {f"v{i}": x for i, x in enumerate(rng.uniform(0.4, 0.6, 6))}
    full = {v: x + rng.uniform(0.05, 0.1) for v, x in low.items()}
    half = {v: low[v] + 0.5 * (full[v] - low[v]) for v in low}
    g = gap_fraction(half, low, full, n_boot=500)
    # every resample closes exactly half of its gap, so the bootstrap CI collapses onto 0.5
    assert g["fraction"] == pytest.approx(0.5) and (g["ci_low"], g["ci_high"]) == pytest.approx((0.5, 0.5))
    assert g["n"] == 6 and g["undefined"] == 0.0


def test_gap_fraction_undefined_without_a_gap():
    same = {"a": 0.5, "b": 0.6, "c": 0.7}
    assert np.isnan(gap_fraction(same, same, same)["fraction"])
