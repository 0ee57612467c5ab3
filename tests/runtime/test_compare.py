"""The one comparator: hand-checked figures, the activation's labelling rule, and a broken candidate."""

import numpy as np
import pytest

from tpem_seg.runtime.compare import LIMITS, compare_logits, compare_probabilities, dice_per_class


def test_identical_and_perturbed_logits():
    logits = np.random.default_rng(0).normal(size=(2, 3, 4, 5, 6)).astype(np.float32)
    same = compare_logits(logits.copy(), logits, ["a", "b", "c"])
    assert (same.max_abs_prob_diff, same.mean_abs_prob_diff, same.max_abs_logit_diff) == (0.0, 0.0, 0.0)
    assert same.voxel_agreement == 1.0 and same.mean_dice == 1.0 and same.within_limits("fp32")
    skewed = logits.copy()
    skewed[:, 0] += 10.0  # class 0 wins everywhere
    diff = compare_logits(skewed, logits, ["a", "b", "c"])
    assert diff.max_abs_prob_diff > 0.5 and diff.max_abs_logit_diff == pytest.approx(10.0)
    assert diff.voxel_agreement == pytest.approx((logits.argmax(1) == 0).mean())
    assert not diff.within_limits("bf16")


def test_a_non_finite_candidate_is_infinitely_far():
    logits = np.zeros((1, 2, 2, 2, 2), np.float32)
    a = compare_logits(np.full_like(logits, np.nan), logits, ["fg", "other"], "sigmoid")
    assert a.max_abs_prob_diff == np.inf and a.voxel_agreement == 0.0 and not a.within_limits("int8")


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        compare_logits(np.zeros((1, 3, 2, 2, 2)), np.zeros((1, 2, 2, 2, 2)), ["a", "b", "c"])


def test_dice_and_limits_by_hand():
    labels = np.array([0, 1, 1, 2, 2, 2])
    ref = np.array([0, 1, 2, 2, 2, 2])
    assert dice_per_class(labels, ref, 3) == pytest.approx([1.0, 2 / 3, 6 / 7])
    probs = np.zeros((3, 6), np.float32)
    a = compare_probabilities(probs, probs, ["bg", "a", "b"], labels=labels, reference_labels=ref)
    assert a.voxel_agreement == pytest.approx(5 / 6) and not a.within_limits("fp32")
    assert a.mean_dice == pytest.approx((2 / 3 + 6 / 7) / 2) and a.dice["a"] == pytest.approx(2 / 3)
    assert LIMITS["fp32"][0] == 0.999


def test_sigmoid_labels_count_the_background():
    """Sigmoid packages have no background channel: a voxel below 0.5 everywhere is background."""
    logits = np.array([[-3.0, 3.0]], np.float32)  # one class, two voxels: off, on
    a = compare_logits(logits, -logits, ["vessel"], "sigmoid")
    assert a.voxel_agreement == 0.0 and set(a.dice) == {"background", "vessel"} and a.dice["vessel"] == 0.0
