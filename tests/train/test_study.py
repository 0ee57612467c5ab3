"""The study's bookkeeping: cached results, paired statistics, the report (no training here)."""

from pathlib import Path

import numpy as np
import pytest

from tpem_seg.train.config import VolumeSpec
from tpem_seg.train.study import FOLDS, Results, paired_test, study_config, unit_scores, vesselnn_specs, \
    write_report

pytest.importorskip("torch")

SPECS = {n: VolumeSpec(f"{n}.tif", f"{n}_labels.tif", spacing=(5.0, 1.0, 1.0), name=n) for fold in FOLDS for n in fold}
OTSU = {n: {"dice/vessel": 0.5, "cldice/vessel": 0.4} for n in SPECS}


def fake_results(path, rng, bases=(("scratch", 0.6), ("random", 0.65), ("intensity", 0.66))):
    results = Results(path)
    for k, fold in enumerate(FOLDS):
        for seed in (0, 1, 2):
            for fraction in (0.25, 1.0):
                for arm, base in bases:
                    dice = base + 0.1 * fraction + rng.normal(0, 0.02, size=2)
                    results.add({"table": "vesselnn", "fold": k, "arm": arm, "fraction": fraction, "seed": seed,
                                 "per_volume": {v: {"dice/vessel": float(d), "cldice/vessel": float(d)}
                                                for v, d in zip(fold, dice)}})
    return results


def test_results_are_cached_and_reloaded(tmp_path, rng):
    results = fake_results(tmp_path / "r.jsonl", rng)
    again = Results(tmp_path / "r.jsonl")
    assert len(again.rows) == len(results.rows) == 54
    assert again.has(table="vesselnn", fold=1, arm="random", fraction=0.25, seed=2)
    assert not again.has(table="vesselnn", fold=1, arm="random", fraction=0.5, seed=2)
    assert len(unit_scores(again, "vesselnn", "scratch", 1.0, "dice/vessel")) == 18


def test_paired_test_matches_scipy(rng):
    from scipy import stats

    a = {(i, 0): v for i, v in enumerate(rng.normal(0.7, 0.05, 12))}
    b = {(i, 0): v + 0.03 for i, v in enumerate(rng.normal(0.7, 0.05, 12))}
    t = paired_test(a, b)
    xa, xb = [a[k] for k in sorted(a)], [b[k] for k in sorted(b)]
    assert t["n"] == 12 and t["mean_diff"] == pytest.approx(np.mean(np.subtract(xa, xb)))
    assert t["p_wilcoxon"] == pytest.approx(stats.wilcoxon(np.subtract(xa, xb)).pvalue)
    assert t["ci_low"] < t["mean_diff"] < t["ci_high"]
    assert paired_test({}, {})["n"] == 0


def test_report_has_the_tables_and_tests(tmp_path, rng):
    cfg = study_config("cpu", out=str(tmp_path), doc=str(tmp_path / "doc.md"), sets=["sim.enabled=false"])
    results = fake_results(tmp_path / "results.jsonl", rng)
    text = write_report(cfg, results, OTSU, SPECS, 60.0).read_text()
    assert "| MIM intensity |" in text and "| Otsu threshold (no training) | 0.500 ± 0.000" in text
    assert "MIM random 25% − scratch 100%" in text and "In plain words" in text
    assert "tpem-seg train study --preset cpu" in text and "one channel, 5 µm z-steps" in text
    assert (tmp_path / "doc_results.jsonl").read_text() == results.path.read_text() != ""


def test_report_findings_follow_the_results(tmp_path, rng):
    """The conclusion is computed: the same report code says 'helped' or 'hurt' as the numbers say."""
    cfg = study_config("cpu", out=str(tmp_path), doc=str(tmp_path / "doc.md"), sets=["sim.enabled=false"])
    better = fake_results(tmp_path / "better.jsonl", rng)
    worse = fake_results(tmp_path / "worse.jsonl", rng, (("scratch", 0.7), ("random", 0.6), ("intensity", 0.61)))
    text_better = write_report(cfg, better, OTSU, SPECS, 0.0).read_text()
    text_worse = write_report(cfg, worse, OTSU, SPECS, 0.0).read_text()
    assert "MIM intensity, the better strategy here) helped" in text_better
    assert "MIM intensity, the better strategy here) hurt" in text_worse
    mean_25 = np.mean(list(unit_scores(worse, "vesselnn", "scratch", 0.25, "dice/vessel").values()))
    assert f"vs {mean_25:.3f} from scratch" in text_worse


def test_presets_and_overrides():
    smoke = study_config("smoke", sets=["finetune_steps=3"])
    assert smoke.finetune_steps == 3 and len(smoke.folds) == 1 and smoke.sim.finetune_steps == 5
    gpu = study_config("gpu", seeds="0,1")
    assert gpu.device == "cuda" and gpu.seeds == [0, 1]


def test_vesselnn_specs_read_the_voxel_size():
    folder = Path(__file__).resolve().parents[3] / "shared" / "data" / "vesselnn_2pm"
    if not folder.is_dir():
        pytest.skip(f"real data not here ({folder})")
    specs = vesselnn_specs(folder)
    assert len(specs) == 6 and {n for fold in FOLDS for n in fold} == set(specs)
    assert specs["poon2015_plaqueVessels"].spacing == (5.0, 2.485, 2.485)
