"""The output head: from stitched logits to what users get, for numpy arrays or torch tensors.

One place holds the rule that turns network outputs into labels and probabilities (softmax: the
most probable class; sigmoid: independent foreground channels and no background channel, so
``1 + argmax`` where that channel is on, else 0). The array operations (``ops``) are
:data:`~tpem_seg.runtime.arrays.NUMPY` or :class:`~tpem_seg.runtime.arrays_torch.TorchOps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tpem_seg.runtime.arrays import NUMPY

#: labels: uint8 class indices; probabilities: float16, class axis first; logits: float32 blended
#: network outputs, class axis first (for embedding, e.g. ensembles or custom post-processing).
OUTPUTS = ("labels", "probabilities", "logits")
ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class OutputHead:
    """What a run hands out (``output``, one of :data:`OUTPUTS`) under the network's ``activation``.

    With ``uncertainty`` the stitched channels are ``2K``: the network's K logits, then K class
    probabilities averaged over the uncertainty passes (:mod:`~tpem_seg.runtime.uncertainty`); each
    block is then the pair ``(output, uncertainty map)`` (numpy only: uncertainty runs take the host
    path).
    """

    activation: str
    output: str = "labels"
    uncertainty: bool = False

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(f"output {self.output!r} must be one of {OUTPUTS}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} must be one of {ACTIVATIONS}")

    def from_sums(self, sums, norm, ops=NUMPY):
        """The output block from a finished slab's weighted sums ``(K, dz, Y, X)`` and weight sums ``(dz, Y, X)``.

        Labels come straight from the sums: dividing by the positive weight sum changes neither the
        class order (softmax) nor the sign of a logit (sigmoid, on where the logit > 0, i.e. the
        probability > 0.5), so neither the division nor the activation is computed. Otherwise
        ``sums`` is consumed (divided in place on numpy).

        With ``uncertainty``, ``sums`` is ``(2K, dz, Y, X)`` and the result ``(output, uncertainty)``:
        the pass-mean probabilities are blended like the logits (a weighted mean over the tiles
        covering a voxel), and the entropy is taken of that blended mean, not blended itself, so
        that disagreement between overlapping tiles counts as uncertainty too.
        """
        if self.uncertainty:
            k = sums.shape[0] // 2
            mean_probabilities = sums[k:] / norm
            return self.plain().from_sums(sums[:k], norm, ops), uncertainty_map(mean_probabilities, self.activation)
        if self.output == "labels":
            return self.labels(sums, threshold=0.0, ops=ops)
        return self.from_logits(ops.divide_(sums, norm), ops)

    def from_logits(self, logits, ops=NUMPY):
        """The output block from blended logits ``(K, ...)``: labels ``(...)`` uint8, probabilities
        ``(K, ...)`` float16 or the logits as float32."""
        if self.output == "logits":
            return ops.to_float32(logits)
        probabilities = self.probabilities(logits, ops)
        if self.output == "probabilities":
            return ops.to_float16(probabilities)
        return self.labels(probabilities, threshold=0.5, ops=ops)

    def plain(self) -> "OutputHead":
        """This head without the uncertainty channels."""
        return OutputHead(self.activation, self.output)

    def probabilities(self, logits, ops=NUMPY):
        """Class probabilities ``(K, ...)`` float32 from logits ``(K, ...)``."""
        return ops.sigmoid(logits) if self.activation == "sigmoid" else ops.softmax(logits)

    def labels(self, scores, threshold: float, ops=NUMPY):
        """``uint8`` class indices ``(...)`` from class scores ``(K, ...)`` (logits, or their sums with
        ``threshold`` 0; probabilities with 0.5), by the rule in the module docstring."""
        best = ops.argmax(scores)
        if self.activation == "sigmoid":
            on = ops.take(scores, best) > threshold
            best = ops.where(on, best + 1, 0)
        return ops.to_uint8(best)


def to_probabilities(logits: np.ndarray, activation: str) -> np.ndarray:
    """Class probabilities ``(K, ...)`` from numpy logits ``(K, ...)``, class axis first."""
    return OutputHead(activation).probabilities(logits)


def to_labels(probabilities: np.ndarray, activation: str) -> np.ndarray:
    """``uint8`` class indices ``(...)`` from numpy probabilities ``(K, ...)``."""
    return OutputHead(activation).labels(probabilities, threshold=0.5)


def uncertainty_map(probabilities: np.ndarray, activation: str) -> np.ndarray:
    """Normalised predictive entropy ``(...)`` float32 in [0, 1] of class probabilities ``(K, ...)``.

    softmax: ``-sum_k p_k log p_k / log K`` (1: all classes equally likely); sigmoid: the mean over
    the K independent channels of their binary entropy over ``log 2``.
    """
    p = np.clip(probabilities.astype(np.float32, copy=False), 1e-7, 1.0)
    if activation == "sigmoid":
        q = np.clip(1.0 - probabilities.astype(np.float32, copy=False), 1e-7, 1.0)
        bits = -(p * np.log(p) + q * np.log(q)) / np.log(2.0)
        return bits.mean(axis=0).astype(np.float32)
    k = probabilities.shape[0]
    return (-(p * np.log(p)).sum(axis=0) / np.float32(np.log(k))).astype(np.float32)
