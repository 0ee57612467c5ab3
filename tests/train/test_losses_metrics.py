"""Dice + CE loss with ignored voxels; Dice, clDice and the Otsu baseline."""

import numpy as np
import pytest

from tpem_seg.train.metrics import cldice, dice, dice_per_class, otsu_labels, score


def tube(shape=(16, 48, 48), centre=(24, 24), radius=3):
    zz, yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def test_dice():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    labels = np.array([0, 1, 2, 2])
    assert dice_per_class(labels, np.array([0, 1, 2, 0]), ["bg", "vessel", "neuron"]) == {
        "vessel": 1.0, "neuron": pytest.approx(2 / 3)}


def test_cldice_rewards_topology_over_volume():
    truth = tube(radius=4)
    assert cldice(truth, truth) == pytest.approx(1.0)
    thin = tube(radius=1)  # low Dice (too thin) but the centreline is all there
    assert dice(thin, truth) < 0.3 and cldice(thin, truth) > 0.9
    broken = truth.copy()
    broken[6:10] = False  # a gap along the vessel: high Dice, lower clDice than the thin one
    assert dice(broken, truth) > 0.8 and cldice(broken, truth) < cldice(thin, truth)
    assert cldice(np.zeros_like(truth), truth) == 0.0
    assert set(score(truth.astype(np.uint8), truth.astype(np.uint8), ["bg", "vessel"])) == {"dice/vessel",
                                                                                           "cldice/vessel"}


def test_otsu_baseline_splits_bright_from_dark(rng):
    image = rng.normal(10, 1, (8, 32, 32))
    truth = tube((8, 32, 32), (16, 16), 4)
    image[truth] += 20
    assert dice(otsu_labels(image) == 1, truth) > 0.95


def test_dice_ce_loss_skips_ignored_voxels():
    torch = pytest.importorskip("torch")
    from tpem_seg.train.data import IGNORE
    from tpem_seg.train.losses import dice_ce_loss

    labels = torch.zeros(1, 4, 8, 8, dtype=torch.long)
    labels[..., 4:] = 1
    perfect = torch.stack([(labels == 0).float(), (labels == 1).float()], dim=1) * 20 - 10
    assert dice_ce_loss(perfect, labels).item() < 1e-3
    wrong = perfect.clone()
    wrong[..., :2] = -wrong[..., :2]  # wrong predictions in columns 0-1 ...
    ignored = labels.clone()
    ignored[..., :2] = IGNORE  # ... which are not annotated
    assert dice_ce_loss(wrong, ignored).item() < 1e-3
    assert dice_ce_loss(wrong, labels).item() > 1.0
    all_ignored = torch.full_like(labels, IGNORE)
    assert dice_ce_loss(wrong.requires_grad_(), all_ignored).item() == 0.0
