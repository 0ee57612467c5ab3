"""Fixtures for export tests: random-weight checkpoints, one package exported through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

CLASSES = ["background", "vessel", "neuron"]


def save_tpem_checkpoint(path: Path, name: str = "unetr-test", seed: int = 0, kind: str = "finetune",
                         **overrides) -> Path:
    """A tpem-seg checkpoint (models/checkpoint.py format) with random weights and typical metadata."""
    import torch

    from tpem_seg.models import NormalizationSpec, create_model, get_config
    from tpem_seg.models.checkpoint import Checkpoint, save_checkpoint

    torch.manual_seed(seed)
    config = get_config(name, **overrides)
    model = create_model(config)
    meta = {"channels": ["vessel", "neuron"][: config.in_channels], "classes": CLASSES[: config.out_channels],
            "spacing": [5.0, 0.99, 0.99], "normalization": NormalizationSpec().to_dict(),
            "command": "tpem-seg train finetune (test)", "commit": "0" * 40, "metrics": {"dice_vessel": 0.5}}
    return save_checkpoint(path, Checkpoint(kind, config, model.state_dict(), meta=meta))



@pytest.fixture(scope="module", autouse=True)
def _torch_on_one_thread(one_torch_thread):
    """Every export test module runs PyTorch on one thread (see ``one_torch_thread``)."""


def pytest_runtest_setup(item):
    """Tests marked slow (> 30 s on 2 cores) run when TPEM_SEG_SLOW_TESTS=1: the whole of tests/export
    stays within its 2.5-minute budget without them."""
    import os

    if item.get_closest_marker("slow") and os.environ.get("TPEM_SEG_SLOW_TESTS") != "1":
        pytest.skip("slow (> 30 s on 2 cores); run with TPEM_SEG_SLOW_TESTS=1")


@pytest.fixture(scope="session")
def make_checkpoint():
    """``make_checkpoint(path, name="unetr-test", seed=0, kind="finetune", **overrides)`` -> path."""
    return save_tpem_checkpoint


@pytest.fixture(scope="session")
def tpem_checkpoint(tmp_path_factory) -> Path:
    return save_tpem_checkpoint(tmp_path_factory.mktemp("ckpt") / "finetune.pt")


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tpem_checkpoint, cli):
    """``tpem-seg export finetune.pt -o test.tpem`` (unetr-test, 16x32x32 tiles): (package path, CLI result)."""
    out = tmp_path_factory.mktemp("export") / "test.tpem"
    result = cli(["export", str(tpem_checkpoint), "-o", str(out), "--version", "1.2.3"])
    assert result.exit_code == 0, result.stderr
    return out, result
