"""Segmentation metrics (Dice per class, clDice for vessels) and the Otsu baseline. numpy/scipy/skimage."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice ``2|P & T| / (|P| + |T|)`` of two boolean volumes; 1.0 when both are empty."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    total = int(pred.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, target).sum()) / total


def dice_per_class(pred: np.ndarray, target: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Dice of each foreground class (1..K-1) by name, for label volumes ``(Z, Y, X)`` of class indices."""
    return {name: dice(pred == k, target == k) for k, name in enumerate(classes) if k > 0}


def skeleton(mask: np.ndarray) -> np.ndarray:
    """3D skeleton (Lee's thinning, scikit-image) of a boolean volume ``(Z, Y, X)``."""
    from skimage.morphology import skeletonize

    return skeletonize(np.asarray(mask, bool)).astype(bool)


def cldice(pred: np.ndarray, target: np.ndarray) -> float:
    """Centreline Dice (Shit et al., CVPR 2021) of boolean volumes ``(Z, Y, X)``.

    ``Tprec = |S(P) & T| / |S(P)|`` (how much of the predicted centreline lies in the truth),
    ``Tsens = |S(T) & P| / |S(T)|`` (how much of the true centreline is covered),
    ``clDice = 2 Tprec Tsens / (Tprec + Tsens)``. Skeletons on the voxel grid as is (no
    resampling of anisotropic voxels). 1.0 when both are empty, 0.0 when only one is.
    """
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if not pred.any() and not target.any():
        return 1.0
    if not pred.any() or not target.any():
        return 0.0
    sp, st = skeleton(pred), skeleton(target)
    tprec = (sp & target).sum() / max(int(sp.sum()), 1)
    tsens = (st & pred).sum() / max(int(st.sum()), 1)
    return 0.0 if tprec + tsens == 0 else float(2 * tprec * tsens / (tprec + tsens))


def score(pred: np.ndarray, target: np.ndarray, classes: list[str], vessel_class: str | None = "vessel",
          with_cldice: bool = True) -> dict[str, float]:
    """``dice/<class>`` for every foreground class, and ``cldice/<vessel_class>`` when that class exists."""
    out = {f"dice/{k}": v for k, v in dice_per_class(pred, target, classes).items()}
    if with_cldice and vessel_class in classes:
        k = classes.index(vessel_class)
        out[f"cldice/{vessel_class}"] = cldice(pred == k, target == k)
    return out


def otsu_labels(image: np.ndarray) -> np.ndarray:
    """The classic baseline: a global Otsu threshold of a ``(Z, Y, X)`` image -> uint8 {0, 1}."""
    from skimage.filters import threshold_otsu

    return (image > threshold_otsu(np.asarray(image))).astype(np.uint8)


def best_threshold_dice(image: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The best Dice any global threshold of ``image`` reaches against the binary ``target`` (same
    shape), and that threshold: ``image > t`` for every distinct intensity ``t``.

    Chosen on the volume's own labels, so an upper bound for thresholding (Otsu included), not a
    method: a learned model should beat it. Exact, from a histogram of the intensities (integer
    images) or their sorted distinct values: foreground counts above each candidate in one pass.
    """
    values = np.asarray(image).ravel()
    truth = np.asarray(target).ravel() > 0
    levels, index = np.unique(values, return_inverse=True)
    total = np.bincount(index, minlength=len(levels))
    positive = np.bincount(index, weights=truth, minlength=len(levels))
    # voxels above levels[i] (predicted foreground for t = levels[i]) and the true ones among them
    above = total[::-1].cumsum()[::-1] - total
    hits = positive[::-1].cumsum()[::-1] - positive
    n_true = truth.sum()
    denominator = above + n_true
    scores = np.where(denominator > 0, 2.0 * hits / np.maximum(denominator, 1), 1.0)
    best = int(np.argmax(scores))
    return float(scores[best]), float(levels[best])


def error_auroc(uncertainty: np.ndarray, wrong: np.ndarray) -> float:
    """Area under the ROC curve of ``uncertainty`` as a score for the ``wrong`` voxels (bool, same
    shape): the probability that a random wrong voxel is more uncertain than a random right one
    (ties count half); 0.5 is chance. NaN when every voxel is right or every one wrong.

    The Mann-Whitney U statistic over the voxels' ranks (average ranks for ties).
    """
    from scipy.stats import rankdata

    scores = np.asarray(uncertainty, dtype=np.float64).ravel()
    positive = np.asarray(wrong, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))
