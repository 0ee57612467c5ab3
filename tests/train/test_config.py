"""Typed configs from TOML/YAML with command-line overrides; shipped configs parse."""

from pathlib import Path

import pytest

from tpem_seg.errors import TpemSegError
from tpem_seg.train.config import (
    EvaluateConfig, FinetuneConfig, PretrainConfig, from_dict, load_config, to_dict,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_toml_with_overrides(tmp_path):
    path = tmp_path / "pre.toml"
    path.write_text('model = "unetr-test"\nsteps = 10\nmask_patch = [16, 16, 16]\n'
                    '[[train]]\nimage = "a.tif"\n[augment]\nnoise_std = 0.0\n')
    cfg = load_config(PretrainConfig, path, overrides={"masking": "intensity", "steps": None},
                      sets=["mask_ratio=0.75", "augment.flips=false", "simulated.count=2"])
    assert cfg.steps == 10 and cfg.masking == "intensity" and cfg.mask_ratio == 0.75
    assert cfg.mask_patch == (16, 16, 16) and cfg.train[0].image == "a.tif"
    assert cfg.augment.noise_std == 0.0 and cfg.augment.flips is False and cfg.simulated.count == 2


def test_yaml_and_round_trip(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text("train:\n  - {image: a.tif, labels: b.tif, channels: [0]}\nlabel_fraction: 0.25\n"
                    "normalization: {mode: percentile, percentiles: [1, 99]}\n")
    cfg = load_config(FinetuneConfig, path)
    assert cfg.label_fraction == 0.25 and cfg.normalization.percentiles == (1.0, 99.0)
    assert from_dict(FinetuneConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("sets,match", [(["stepz=3"], "stepz"), (["mask_ratio=1.5"], "mask ratio"),
                                        (["masking=blocks"], "masking"), (["steps=abc"], "number"),
                                        (["mask_patch=[16,16]"], "3 values")])
def test_bad_values_are_user_errors(sets, match):
    with pytest.raises(TpemSegError, match=match):
        load_config(PretrainConfig, sets=["train=[{image: a.tif}]", *sets])


def test_missing_file_and_missing_data():
    with pytest.raises(TpemSegError, match="no such config"):
        load_config(PretrainConfig, "nope.toml")
    with pytest.raises(TpemSegError, match="no training data"):
        load_config(PretrainConfig)
    with pytest.raises(TpemSegError, match="checkpoint"):
        load_config(EvaluateConfig)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.*")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    kinds = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "evaluate": EvaluateConfig}
    matches = [cls for kind, cls in kinds.items() if kind in path.stem]
    if len(matches) != 1:
        pytest.skip(f"{path.name} names no single kind of run (pretrain, finetune, evaluate)")
    cls = matches[0]
    overrides = {"checkpoint": "best.pt"} if cls is EvaluateConfig else None  # given on the command line
    load_config(cls, path, overrides=overrides)
