"""The thresholding upper bound and the uncertainty AUROC, against brute force and scipy."""

import numpy as np
import pytest

from tpem_seg.train.metrics import best_threshold_dice, dice, error_auroc, otsu_labels


def test_best_threshold_is_the_brute_force_maximum(rng):
    image = rng.integers(0, 40, (6, 20, 20)).astype(np.uint8)
    target = (image + rng.integers(-8, 8, image.shape)) > 25
    best, threshold = best_threshold_dice(image, target)
    brute = max((dice(image > t, target), t) for t in np.unique(image))
    assert best == pytest.approx(brute[0])
    assert dice(image > threshold, target) == pytest.approx(best)
    assert best >= dice(otsu_labels(image) == 1, target) - 1e-12  # an upper bound for Otsu too


def test_best_threshold_of_float_images_and_a_perfect_split(rng):
    image = rng.random((4, 16, 16))
    target = image > 0.7
    best, threshold = best_threshold_dice(image, target)
    assert best == pytest.approx(1.0) and 0.69 < threshold <= 0.7


def test_error_auroc_is_scipy_mann_whitney(rng):
    from scipy.stats import mannwhitneyu

    wrong = rng.random((5, 10, 10)) < 0.2
    uncertainty = np.round(rng.random(wrong.shape) + 0.5 * wrong, 1)  # ties on purpose
    u = mannwhitneyu(uncertainty[wrong], uncertainty[~wrong]).statistic
    assert error_auroc(uncertainty, wrong) == pytest.approx(u / (wrong.sum() * (~wrong).sum()))


def test_error_auroc_extremes():
    wrong = np.array([True, True, False, False])
    assert error_auroc(np.array([0.9, 0.8, 0.1, 0.2]), wrong) == 1.0
    assert error_auroc(np.array([0.1, 0.2, 0.9, 0.8]), wrong) == 0.0
    assert np.isnan(error_auroc(np.ones(4), np.zeros(4, bool)))
