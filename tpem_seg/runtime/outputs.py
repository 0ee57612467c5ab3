"""From stitched logits to what users get: probabilities or uint8 class labels."""

from __future__ import annotations

import numpy as np

#: labels: uint8 class indices; probabilities: float16, class axis first; logits: float32 blended
#: network outputs, class axis first (for embedding, e.g. ensembles or custom post-processing).
OUTPUTS = ("labels", "probabilities", "logits")


def to_probabilities(logits: np.ndarray, activation: str) -> np.ndarray:
    """Class probabilities ``(K, ...)`` float32 from logits ``(K, ...)``, class axis first."""
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = logits - logits.max(axis=0, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=0, keepdims=True)
    return shifted


def to_labels(probabilities: np.ndarray, activation: str) -> np.ndarray:
    """``uint8`` class indices ``(...)`` from probabilities ``(K, ...)``.

    Softmax: the most probable class. Sigmoid (independent foreground channels,
    no background channel): ``1 + argmax`` where that channel exceeds 0.5, else 0.
    """
    if activation == "sigmoid":
        best = probabilities.argmax(axis=0)
        on = np.take_along_axis(probabilities, best[None], axis=0)[0] > 0.5
        return np.where(on, best + 1, 0).astype(np.uint8)
    return probabilities.argmax(axis=0).astype(np.uint8)


def finish(logits: np.ndarray, activation: str, output: str) -> np.ndarray:
    """Final output block: labels ``(dz, Y, X)`` uint8, probabilities ``(K, dz, Y, X)`` float16, or logits."""
    if output == "logits":
        return logits.astype(np.float32, copy=False)
    probabilities = to_probabilities(logits, activation)
    if output == "probabilities":
        return probabilities.astype(np.float16)
    return to_labels(probabilities, activation)
