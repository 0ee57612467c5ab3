"""Patch datasets: runtime normalisation, padding of thin stacks, foreground sampling, label fractions,
augmentation."""

import numpy as np
import pytest

from tpem_seg.io import Volume
from tpem_seg.models.manifest import NormalizationSpec
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.train.config import AugmentConfig
from tpem_seg.train.data import (
    IGNORE, PatchSampler, apply_label_fraction, augment_patch, binarize, prepare_volume, region_grid,
)

TILE = (16, 32, 32)


def thin_volume(rng, z=10, y=64, x=64, channels=1):
    image = rng.integers(0, 1000, size=(channels, z, y, x)).astype(np.uint16)
    labels = np.zeros((z, y, x), np.uint8)
    labels[:, 20:24, :] = 1  # a horizontal "vessel" sheet
    image[:, labels == 1] += 3000
    return Volume(image, "CZYX", (5.0, 1.0, 1.0)), labels


def test_normalisation_is_the_runtimes_and_thin_stacks_are_padded_like_the_runtime(rng):
    volume, labels = thin_volume(rng)
    tv = prepare_volume(volume, labels, "v", TILE, NormalizationSpec(), 1)
    assert tv.image.shape == (1, 16, 64, 64)
    # pad_widths splits 6 padding planes 3 before, 3 after (as the runtime pads)
    expected = fit_normalizer(volume, NormalizationSpec())(volume.read_czyx())
    np.testing.assert_array_equal(tv.image[:, 3:13], expected)
    assert (tv.image[:, :3] == 0).all() and (tv.image[:, 13:] == 0).all()
    assert tv.valid[3:13].all() and not tv.valid[:3].any() and not tv.valid[13:].any()
    assert (tv.labels[:3] == IGNORE).all() and (tv.labels[3:13] == labels).all()


def test_foreground_sampling_centres_patches_on_foreground(rng):
    volume, labels = thin_volume(rng, z=16, y=128, x=128)
    labels[:] = 0
    labels[5:8, 100:104, 100:104] = 1  # one tiny object
    tv = prepare_volume(volume, labels, "v", TILE, NormalizationSpec(), 1)
    always = PatchSampler([tv], TILE, rng, labelled=True, foreground_prob=1.0).batch(20)
    never = PatchSampler([tv], TILE, rng, labelled=True, foreground_prob=0.0).batch(40)
    assert all((p == 1).any() for p in always.labels)
    assert np.mean([(p == 1).any() for p in never.labels]) < 0.5


def test_label_fraction_by_region_keeps_a_quarter_of_the_columns(rng):
    volume, labels = thin_volume(rng, y=128, x=128)
    tv = prepare_volume(volume, labels, "v", TILE, NormalizationSpec(), 1)
    kept = apply_label_fraction([tv], 0.25, "region", (32, 32), np.random.default_rng(3))
    assert (tv.labels[3:13] == labels).all()  # the input keeps its labels for the next seed
    annotated = kept[0].labels[3:13] != IGNORE
    assert annotated.mean() == pytest.approx(0.25)
    assert (annotated == annotated[0]).all()  # full-depth columns
    patches = PatchSampler(kept, TILE, rng, labelled=True, foreground_prob=0.0).batch(10)
    assert all((p != IGNORE).any() for p in patches.labels)  # every patch overlaps the annotation


def test_label_fraction_by_volume(rng):
    volumes = [prepare_volume(*thin_volume(rng), f"v{i}", TILE, NormalizationSpec(), 1) for i in range(4)]
    kept = apply_label_fraction(volumes, 0.25, "volume", (32, 32), np.random.default_rng(0))
    assert len(kept) == 1 and (kept[0].labels != IGNORE).sum() == (volumes[0].labels != IGNORE).sum()
    assert len(apply_label_fraction(volumes, 1.0, "volume", (32, 32), np.random.default_rng(0))) == 4


def test_region_grid_tiles_the_plane():
    cells = region_grid((512, 500), (128, 128))
    covered = np.zeros((512, 500), int)
    for sy, sx in cells:
        covered[sy, sx] += 1
    assert len(cells) == 16 and (covered == 1).all()


def test_augmentation_moves_labels_with_the_image_and_keeps_padding_zero(rng):
    image = rng.random((2, 16, 32, 32)).astype(np.float32) + 0.5
    valid = np.ones((16, 32, 32), bool)
    valid[:3] = False
    image[:, ~valid] = 0
    labels = (image[0] > 1.0).astype(np.uint8)
    cfg = AugmentConfig(noise_std=0.0, scale=(2.0, 2.0), shift=(0.0, 0.0))
    for _ in range(10):
        a_image, a_labels, a_valid = augment_patch(image, labels, valid, cfg, rng)
        assert a_image.shape == image.shape and a_image.dtype == np.float32
        np.testing.assert_array_equal(a_labels, (a_image[0] > 2.0).astype(np.uint8))
        assert (a_image[:, ~a_valid] == 0).all() and a_valid.sum() == valid.sum()


def test_binarize_vessel_masks():
    assert binarize(np.array([0, 254, 255, 1])).tolist() == [0, 1, 1, 1]
