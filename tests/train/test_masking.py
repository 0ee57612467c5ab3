"""Masking strategies: exact ratios, the intensity bias, independent channel masks (numpy only)."""

import numpy as np
import pytest

from tpem_seg.train.masking import (
    STRATEGIES, channel_mask, intensity_mask, intensity_weights, make_masks, mask_count, patch_means,
    random_mask, upsample_mask,
)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.6, 0.75])
@pytest.mark.parametrize("mask_patch", [(16, 16, 16), (4, 8, 8)])
def test_each_strategy_hits_its_ratio(strategy, ratio, mask_patch, rng):
    images = rng.random((3, 2, 16, 64, 64)).astype(np.float32)
    masks = make_masks(strategy, images, mask_patch, ratio, rng)
    grid = (16 // mask_patch[0], 64 // mask_patch[1], 64 // mask_patch[2])
    assert masks.shape == (3, 2, *grid) and masks.dtype == bool
    n = int(np.prod(grid))
    per_sample_channel = masks.reshape(3, 2, -1).sum(-1)
    assert (per_sample_channel == round(ratio * n)).all()


def test_mask_count_keeps_at_least_one_visible_and_one_masked():
    assert mask_count(16, 0.01) == 1
    assert mask_count(16, 0.99) == 15
    assert mask_count(16, 0.6) == 10
    with pytest.raises(ValueError):
        mask_count(1, 0.5)
    with pytest.raises(ValueError):
        mask_count(16, 1.0)


def test_intensity_masking_prefers_bright_patches(rng):
    # left half of the grid bright, right half dark; half of the cells masked each draw
    intensity = np.zeros((2000, 1, 4, 4))
    intensity[..., :2] = 1.0
    intensity += rng.random(intensity.shape) * 0.1
    masks = intensity_mask(intensity, 0.5, rng)
    bright, dark = masks[..., :2].mean(), masks[..., 2:].mean()
    assert masks.reshape(2000, -1).sum(-1).tolist() == [8] * 2000
    assert bright > 0.8 and dark < 0.2, (bright, dark)
    # the same draw by random masking shows no preference
    random = random_mask((2000,), (1, 4, 4), 0.5, rng)
    assert abs(random[..., :2].mean() - random[..., 2:].mean()) < 0.05


def test_intensity_weights_rule():
    w = intensity_weights(np.array([[0.2, 0.4, 0.6]]), sharpness=1.0, floor=0.05)
    np.testing.assert_allclose(w, [[0.05, 0.55, 1.05]])
    flat = intensity_weights(np.full((1, 4), 0.3))
    np.testing.assert_allclose(flat, 0.05)  # a flat patch: all cells equally likely


def test_channel_masks_differ_between_channels_and_shared_ones_do_not(rng):
    images = rng.random((8, 2, 16, 64, 64)).astype(np.float32)
    for draw in ("random", "intensity"):
        masks = make_masks("channel", images, (4, 8, 8), 0.6, rng, channel_draw=draw)
        differ = [(masks[i, 0] != masks[i, 1]).any() for i in range(8)]
        assert all(differ)
        overlap = (masks[:, 0] & masks[:, 1]).mean() / masks[:, 0].mean()
        assert 0.4 < overlap < 0.8  # independent draws overlap by about the ratio (0.6)
    for strategy in ("random", "intensity"):
        masks = make_masks(strategy, images, (4, 8, 8), 0.6, rng)
        assert (masks[:, 0] == masks[:, 1]).all()


def test_channel_intensity_draw_follows_each_channels_own_intensity(rng):
    intensity = np.zeros((1000, 2, 1, 2, 4))
    intensity[:, 0, ..., :2] = 1.0  # channel 0 bright on the left
    intensity[:, 1, ..., 2:] = 1.0  # channel 1 bright on the right
    masks = channel_mask(intensity, 0.5, rng, draw="intensity")
    assert masks[:, 0, ..., :2].mean() > 0.8 and masks[:, 1, ..., 2:].mean() > 0.8


def test_patch_means_and_upsample_are_consistent(rng):
    images = rng.random((2, 1, 16, 32, 32)).astype(np.float32)
    means = patch_means(images, (16, 16, 16))
    assert means.shape == (2, 1, 1, 2, 2)
    np.testing.assert_allclose(means[0, 0, 0, 1, 0], images[0, 0, :, 16:, :16].mean(), rtol=1e-5)
    grid = np.zeros((2, 1, 1, 2, 2), bool)
    grid[0, 0, 0, 1, 0] = True
    voxels = upsample_mask(grid, (16, 16, 16))
    assert voxels.shape == images.shape
    assert voxels[0, 0, :, 16:, :16].all() and voxels.sum() == 16 ** 3
    with pytest.raises(ValueError):
        patch_means(images, (16, 12, 16))
