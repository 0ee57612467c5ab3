"""The loops on in-memory arrays: checkpoints carry their config, resume continues, validation keeps the best."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tpem_seg.models.checkpoint import load_checkpoint  # noqa: E402
from tpem_seg.train.config import FinetuneConfig, PretrainConfig, from_dict  # noqa: E402
from tpem_seg.train.data import array_volume  # noqa: E402
from tpem_seg.train.finetune import finetune  # noqa: E402
from tpem_seg.train.pretrain import pretrain  # noqa: E402

TILE = (16, 32, 32)
QUIET = dict(model="unetr-test", in_channels=1, batch_size=2, warmup_steps=1, log_every=1, progress=False,
             device="cpu")


def stripes(rng, z=12, y=40, x=40):
    """A thin stack (padded to the 16-plane tile) with bright stripes as vessels."""
    labels = np.zeros((z, y, x), np.uint8)
    labels[:, ::8, :] = 1
    image = rng.normal(100, 10, (1, z, y, x)) + 300.0 * labels
    return image.astype(np.float32), labels


def test_pretrain_checkpoint_and_resume(tmp_path, rng):
    image, _ = stripes(rng)
    volume = array_volume(image, tile=TILE, spacing=(5, 1, 1), name="stripes")
    cfg = PretrainConfig(**QUIET, steps=3, out=str(tmp_path), masking="intensity", mask_ratio=0.5)
    path = pretrain(cfg, volumes=[volume])
    first = load_checkpoint(path)
    assert first.kind == "pretrain" and first.extra["step"] == 3 and first.meta["data"] == ["stripes"]
    assert from_dict(PretrainConfig, first.meta["train_config"]) == cfg  # the config travels with the weights

    resumed = PretrainConfig(**{**QUIET, "steps": 5}, out=str(tmp_path), masking="intensity", mask_ratio=0.5,
                             resume=True)
    second = load_checkpoint(pretrain(resumed, volumes=[volume]))
    assert second.extra["step"] == 5
    assert any(not torch.equal(second.model[k], first.model[k]) for k in first.model)


def test_finetune_validates_and_keeps_the_best(tmp_path, rng):
    image, labels = stripes(rng)
    train = array_volume(image, labels, tile=TILE, name="train")
    val = array_volume(*stripes(rng), tile=TILE, name="val")
    cfg = FinetuneConfig(**QUIET, steps=4, val_every=2, out=str(tmp_path), lr=1e-2)
    best = load_checkpoint(finetune(cfg, volumes=[train], val_volumes=[val]))
    last = load_checkpoint(tmp_path / "last.pt")
    assert best.kind == last.kind == "finetune"
    assert best.meta["metrics"]["best"] == max(best.meta["metrics"]["best"], last.meta["metrics"]["dice/mean"])
    assert "optimizer" in last.extra and best.meta["classes"] == ["background", "vessel"]
    assert best.meta["normalization"]["mode"] == "percentile" and best.config.out_channels == 2
