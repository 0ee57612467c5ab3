"""One comparator: how far one output of the network is from a reference output of it.

Used wherever two forms of the network are held against each other: export parity (ONNX
Runtime against PyTorch on tiles), the bench (every configuration against the MONAI
baseline on a whole volume), the tuner (every candidate configuration against the package's
fp32 reference) and the tests. Outputs are logits or probabilities with the class axis
first after any batch axis; labels follow the package's activation rule
(:func:`tpem_seg.runtime.outputs.to_labels`), so a sigmoid package's background counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from tpem_seg.runtime.outputs import to_labels, to_probabilities

#: Agreement a configuration must reach against its fp32 reference on a whole volume, by
#: precision: (min fraction of voxels with equal labels, max abs probability difference).
#: fp32 differs only by summation order; reduced precisions are allowed a visible but small drift.
LIMITS = {"fp32": (0.999, 1e-3), "bf16": (0.98, 0.2), "fp16": (0.99, 0.1), "int8": (0.95, 0.5)}


@dataclass(frozen=True)
class Agreement:
    """A candidate against a reference output of the same input.

    voxel_agreement: fraction of voxels with equal labels; max_abs_prob_diff / mean_abs_prob_diff:
    over all voxels and classes, after the activation; max_abs_logit_diff: the same on logits
    (None when compared from probabilities); dice: per class name, 2|A∩B| / (|A| + |B|) of the
    voxels labelled that class (1 when both lack it); mean_dice: over the foreground classes
    either side labels (1 when neither labels any).
    """

    voxel_agreement: float
    max_abs_prob_diff: float
    mean_abs_prob_diff: float
    dice: dict[str, float]
    mean_dice: float
    max_abs_logit_diff: float | None = None

    def within(self, min_voxel_agreement: float, max_prob_diff: float) -> bool:
        return self.voxel_agreement >= min_voxel_agreement and self.max_abs_prob_diff <= max_prob_diff

    def within_limits(self, precision: str) -> bool:
        """Within :data:`LIMITS` for ``precision`` (an unknown one gets int8's)."""
        return self.within(*LIMITS.get(precision, LIMITS["int8"]))

    def to_dict(self) -> dict:
        return asdict(self)


def label_names(classes: Sequence[str], activation: str) -> list[str]:
    """The label values' names: the classes (softmax), or background then the classes (sigmoid)."""
    return list(classes) if activation == "softmax" else ["background", *classes]


def dice_per_class(labels: np.ndarray, reference: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each label value's voxels between two label volumes (1.0 where both lack it)."""
    out = []
    for k in range(n_classes):
        a, b = labels == k, reference == k
        total = int(a.sum()) + int(b.sum())
        out.append(1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total)
    return out


def compare_probabilities(probabilities: np.ndarray, reference: np.ndarray, classes: Sequence[str],
                          activation: str = "softmax", *, batched: bool = False, labels: np.ndarray | None = None,
                          reference_labels: np.ndarray | None = None) -> Agreement:
    """Probabilities ``(K, Z, Y, X)`` (``batched``: ``(N, K, D, H, W)``) against the reference's.
    ``labels`` / ``reference_labels``: the labels each side wrote, where they come from its own run
    (default: derived from the probabilities by the activation's rule)."""
    if probabilities.shape != reference.shape:
        raise ValueError(f"outputs differ in shape: {probabilities.shape} vs {reference.shape}")
    if labels is None:
        labels = _labels(probabilities, activation, batched)
    if reference_labels is None:
        reference_labels = _labels(reference, activation, batched)
    names = label_names(classes, activation)
    dice = dice_per_class(labels, reference_labels, len(names))
    present = [d for k, d in enumerate(dice) if k > 0 and ((labels == k).any() or (reference_labels == k).any())]
    diff = np.abs(probabilities.astype(np.float32) - reference.astype(np.float32))
    finite = bool(np.isfinite(diff).all())
    return Agreement(float(np.mean(labels == reference_labels)), float(diff.max()) if finite else float("inf"),
                     float(diff.mean()) if finite else float("inf"), dict(zip(names, dice)),
                     float(np.mean(present)) if present else 1.0)


def compare_logits(candidate: np.ndarray, reference: np.ndarray, classes: Sequence[str],
                   activation: str = "softmax") -> Agreement:
    """Logit batches ``(N, K, D, H, W)`` (or one volume's ``(K, Z, Y, X)``) against the reference's;
    probabilities are computed in float64, so the comparison adds no rounding of its own.
    A candidate with NaN or infinite logits is infinitely far and agrees on no voxel."""
    if candidate.shape != reference.shape:
        raise ValueError(f"outputs differ in shape: {candidate.shape} vs {reference.shape}")
    batched = candidate.ndim == 5
    ref_p = _probabilities(reference, activation, batched)
    if not np.isfinite(candidate).all():
        names = label_names(classes, activation)
        return Agreement(0.0, float("inf"), float("inf"), {n: 0.0 for n in names}, 0.0, float("inf"))
    can_p = _probabilities(candidate, activation, batched)
    result = compare_probabilities(can_p, ref_p, classes, activation, batched=batched)
    logit_diff = float(np.abs(reference.astype(np.float64) - candidate).max())
    return Agreement(result.voxel_agreement, result.max_abs_prob_diff, result.mean_abs_prob_diff, result.dice,
                     result.mean_dice, logit_diff)


def _probabilities(logits: np.ndarray, activation: str, batched: bool) -> np.ndarray:
    if batched:
        return np.stack([to_probabilities(x.astype(np.float64), activation) for x in logits])
    return to_probabilities(logits.astype(np.float64), activation)


def _labels(probabilities: np.ndarray, activation: str, batched: bool) -> np.ndarray:
    if batched:
        return np.stack([to_labels(p, activation) for p in probabilities])
    return to_labels(probabilities, activation)
