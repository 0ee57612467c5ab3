"""The study's bookkeeping: cached results, the design, the report and its findings (no training here)."""

import re
from pathlib import Path

import numpy as np
import pytest

from tpem_seg.errors import TpemSegError
from tpem_seg.train.config import VolumeSpec
from tpem_seg.train.study import FOLDS, Cell, Results, study_config, unit_scores, vesselnn_specs, write_report
from tpem_seg.train.study.findings import secondary_comparisons

pytest.importorskip("torch")

SPECS = {n: VolumeSpec(f"{n}.tif", f"{n}_labels.tif", spacing=(5.0, 1.0, 1.0), name=n) for fold in FOLDS for n in fold}
OTSU = {n: {"dice/vessel": 0.5, "cldice/vessel": 0.4} for n in SPECS}
BUDGET_GAIN = {"10%": 0.0, "25%": 0.04, "1 of 4 volumes": 0.02, "100%": 0.08}


def fake_results(path, rng, cfg, bases=None, noise=0.01, skip=()):
    """Fake rows for every cell of ``cfg``: Dice = base(arm) + gain(budget) + a per-volume offset + noise."""
    bases = bases or {"scratch": 0.6, "random": 0.63, "intensity": 0.62}
    offsets = {v: o for v, o in zip(SPECS, rng.normal(0, 0.1, len(SPECS)))}
    results = Results(path)
    for k, fold in enumerate(FOLDS):
        for seed in cfg.seeds:
            for c in cfg.cells:
                if (c.arm, c.labels) in skip:
                    continue
                dice = {v: bases[c.arm] + BUDGET_GAIN[c.labels] + offsets[v] + rng.normal(0, noise) for v in fold}
                results.add({"table": "vesselnn", "fold": k, "arm": c.arm, "labels": c.labels, "seed": seed,
                             "per_volume": {v: {"dice/vessel": float(d), "cldice/vessel": float(d)}
                                            for v, d in dice.items()}})
    return results


def cpu_config(tmp_path, *sets):
    return study_config("cpu", out=str(tmp_path), doc=str(tmp_path / "doc.md"),
                        sets=["sim.enabled=false", "diagnostics.enabled=false", *sets])


def test_results_are_cached_and_reloaded(tmp_path, rng):
    cfg = cpu_config(tmp_path, "seeds=[0,1]")
    results = fake_results(tmp_path / "r.jsonl", rng, cfg)
    again = Results(tmp_path / "r.jsonl")
    assert len(again.rows) == len(results.rows) == 3 * 2 * len(cfg.cells)
    assert again.has(table="vesselnn", fold=1, arm="random", labels="25%", seed=1)
    assert not again.has(table="vesselnn", fold=1, arm="random", labels="50%", seed=1)
    assert len(unit_scores(again, "vesselnn", "scratch", "100%", "dice/vessel")) == 12


def test_primary_cells_run_first_and_unknown_budgets_are_refused():
    cfg = study_config("cpu")
    assert cfg.ordered_cells()[:3] == [Cell("scratch", "100%"), Cell("scratch", "25%"), Cell("random", "25%")]
    assert sorted(map(str, cfg.ordered_cells())) == sorted(map(str, cfg.cells))
    only_scratch = study_config("cpu", sets=["cells=[{arm: scratch, labels: 10%}, {arm: scratch, labels: 100%}]"])
    assert only_scratch.ordered_cells() == [Cell("scratch", "100%"), Cell("scratch", "10%")]
    with pytest.raises(TpemSegError, match="label budget '50%'"):
        study_config("cpu", sets=["primary.low=50%"])
    with pytest.raises(TpemSegError, match="arm 'channel' unknown"):
        study_config("cpu", sets=["cells=[{arm: channel, labels: 25%}]"])


def test_report_has_the_design_equivalence_and_gap(tmp_path, rng):
    cfg = cpu_config(tmp_path)
    results = fake_results(tmp_path / "results.jsonl", rng, cfg)
    text = write_report(cfg, results, OTSU, SPECS, 60.0).read_text()
    assert "All planned cells finished." in text and "| Otsu threshold (no training) | 0.500 ± 0.000" in text
    assert "| MIM random 25% − scratch 100% | primary | 6 |" in text and "TOST" in text and "90% [" in text
    assert "| MIM random 10% − scratch 10% | secondary |" in text and "Holm" in text
    assert "### Fraction of the gap closed" in text and "| MIM random 25% | 6 |" in text
    assert "margin ±0.02 Dice" in text and "tpem-seg train study --preset cpu --pilot" in text
    assert (tmp_path / "doc_results.jsonl").read_text() == results.path.read_text() != ""


def test_report_lists_incomplete_cells(tmp_path, rng):
    cfg = cpu_config(tmp_path, "diagnostics.enabled=true")
    results = fake_results(tmp_path / "results.jsonl", rng, cfg, skip={("random", "10%")})
    text = write_report(cfg, results, OTSU, SPECS, 0.0).read_text()
    assert "**Incomplete**" in text and "MIM random 10%: 0 of 6" in text and "diagnostic probe: 0 of 2 runs" in text
    # the missing comparison still counts in the Holm family of 5 (as p = 1)
    family = {c.name: c for c in secondary_comparisons(cfg, results)}
    assert len(family) == 5 and np.isnan(family["MIM random 10% − scratch 10%"].p_holm)
    finite = sorted(c.test["p"] for c in family.values() if np.isfinite(c.test["p"]))
    assert min(c.p_holm for c in family.values() if np.isfinite(c.p_holm)) == pytest.approx(min(1.0, 5 * finite[0]))


def test_conclusion_follows_the_numbers(tmp_path, rng):
    """The verdict is computed: equivalence when pretrained 25% matches scratch 100%, none when it is lower."""
    cfg = cpu_config(tmp_path)
    # random at 25% = scratch + 0.04 + 0.04 = scratch at 100%, up to noise of 0.002 per volume
    close = fake_results(tmp_path / "close.jsonl", rng, cfg, {"scratch": 0.6, "random": 0.64, "intensity": 0.6},
                         noise=0.002)
    far = fake_results(tmp_path / "far.jsonl", rng, cfg, {"scratch": 0.6, "random": 0.55, "intensity": 0.6})
    text_close = write_report(cfg, close, OTSU, SPECS, 0.0).read_text()
    text_far = write_report(cfg, far, OTSU, SPECS, 0.0).read_text()
    assert "is supported: the 90% CI" in text_close
    assert "is not supported: the 90% CI" in text_far and "worse than training from scratch" in text_far
    closed = int(re.search(r"It closes (-?\d+)% of the", text_close).group(1))
    assert 85 <= closed <= 115


def test_presets_and_overrides():
    smoke = study_config("smoke", sets=["finetune_steps=3"])
    assert smoke.finetune_steps == 3 and len(smoke.folds) == 1 and smoke.sim.finetune_steps == 3
    gpu = study_config("gpu", seeds="0,1")
    assert gpu.device == "cuda" and gpu.seeds == [0, 1] and gpu.model == "unetr-t16w"
    cpu = study_config("cpu")
    assert cpu.primary.margin == 0.02 and cpu.encoder_lr_scale == 0.5 and cpu.mask_ratio == 0.75
    assert all(m < 16 for m in cpu.mask_patch)  # mask units smaller than a ViT token


def test_vesselnn_specs_read_the_voxel_size():
    folder = Path(__file__).resolve().parents[3] / "shared" / "data" / "vesselnn_2pm"
    if not folder.is_dir():
        pytest.skip(f"real data not here ({folder})")
    specs = vesselnn_specs(folder)
    assert len(specs) == 6 and {n for fold in FOLDS for n in fold} == set(specs)
    assert specs["poon2015_plaqueVessels"].spacing == (5.0, 2.485, 2.485)


def test_the_vit_zeroed_change_pairs_the_models_of_its_seed(tmp_path, rng):
    from tpem_seg.train.study.tables import vit_zeroed_change

    cfg = cpu_config(tmp_path, "seeds=[0,1]")
    results = fake_results(tmp_path / "r.jsonl", rng, cfg)
    trained = unit_scores(results, "vesselnn", "scratch", "100%", "dice/vessel")
    for k, fold in enumerate(FOLDS):  # the diagnostic re-scores seed 0's models only: 0.1 lower
        results.add({"table": "vit-zeroed", "fold": k, "arm": "scratch", "labels": "100%", "seed": 0,
                     "per_volume": {v: {"dice/vessel": trained[(v, 0)] - 0.1} for v in fold}})
    assert vit_zeroed_change(cfg, results) == pytest.approx(-0.1)
