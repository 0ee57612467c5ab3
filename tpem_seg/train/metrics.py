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
