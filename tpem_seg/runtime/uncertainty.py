"""Per-voxel uncertainty: the passes each tile goes through, reduced to a mean class probability.

Two sources of passes:

- ``mc-dropout``: Monte-Carlo dropout (Gal and Ghahramani 2016), for a package trained with dropout:
  ``passes`` forward passes with the ViT's dropout active (the backend's
  :meth:`~tpem_seg.runtime.backends.base.Backend.infer_mc`).
- ``flips``: the fallback for a package without dropout: the 8 test-time flips
  (:func:`~tpem_seg.runtime.loop.flip_passes`); their spread measures how much the prediction depends
  on the orientation of the input, not on the weights.

A predictor built here maps tiles ``(N, C, D, H, W)`` to ``(N, 2K, D, H, W)``: the network's K logits
that the run's normal output comes from (unchanged by the uncertainty passes: a deterministic pass, or
the flip average with ``tta``), then the K class probabilities averaged over the passes. The stitch
loop blends both halves with the same weights, and the output head takes the entropy of the blended
mean probability (:func:`~tpem_seg.runtime.outputs.uncertainty_map`): the entropy of the mean over
passes and overlapping tiles, i.e. the total predictive uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tpem_seg.runtime.loop import TTA_FLIPS, flip_passes, with_flips
from tpem_seg.runtime.outputs import OutputHead

METHODS = ("mc-dropout", "flips")
#: What the map holds, written into its metadata.
MEASURE = "normalised predictive entropy of the mean class probability (0 certain, 1 uniform)"


@dataclass(frozen=True)
class UncertaintyPlan:
    """How a run measures uncertainty: ``method`` (one of :data:`METHODS`), the number of
    ``passes``, and why that method (for the log and the map's metadata)."""

    method: str
    passes: int
    reason: str

    def __post_init__(self) -> None:
        if self.method not in METHODS or self.passes < 1:
            raise ValueError(f"uncertainty method {self.method!r} with {self.passes} passes: use one of {METHODS}, "
                             f"at least 1 pass")

    def metadata(self) -> dict[str, str]:
        """Key-value metadata stored with the map (:func:`~tpem_seg.io.open_writer`'s ``properties``)."""
        return {"tpem_seg_uncertainty": MEASURE, "tpem_seg_uncertainty_method": self.method,
                "tpem_seg_uncertainty_passes": str(self.passes)}


def plan_uncertainty(backend, mc_passes: int) -> UncertaintyPlan:
    """Monte-Carlo dropout where ``backend`` can run it for its package, else the 8 flips."""
    manifest = backend.package.manifest
    if backend.supports_mc_dropout:
        return UncertaintyPlan("mc-dropout", mc_passes,
                               f"{manifest.name} was trained with dropout {manifest.config.dropout_rate:g}")
    if manifest.config.dropout_rate > 0:
        reason = (f"{manifest.name} was trained with dropout but the {backend.name} backend cannot run it "
                  f"(no dropout-active graph in the package: re-export it, or use --backend torch)")
    else:
        reason = f"{manifest.name} was trained without dropout"
    return UncertaintyPlan("flips", len(TTA_FLIPS), reason)


def pass_predictor(plan: UncertaintyPlan, infer: Callable[[np.ndarray], np.ndarray],
                   infer_mc: Callable[[np.ndarray], np.ndarray] | None, activation: str,
                   tta: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The predictor of the module docstring for ``plan``: ``infer`` is the deterministic network,
    ``infer_mc`` one Monte-Carlo dropout pass (a new draw of the dropout masks at every call)."""
    head = OutputHead(activation)
    if plan.method == "mc-dropout":
        main = with_flips(infer) if tta else infer

        def predict(tiles: np.ndarray) -> np.ndarray:
            total = None
            for _ in range(plan.passes):
                p = batch_probabilities(infer_mc(tiles), head)
                total = p if total is None else total + p
            return np.concatenate([main(tiles), total / plan.passes], axis=1)

        return predict
    passes = flip_passes(infer)

    def predict_flips(tiles: np.ndarray) -> np.ndarray:
        first = logit_sum = prob_sum = None
        for logits in passes(tiles):
            p = batch_probabilities(logits, head)
            if first is None:
                first, logit_sum, prob_sum = logits, logits, p
            else:
                logit_sum, prob_sum = logit_sum + logits, prob_sum + p
        main = logit_sum / len(TTA_FLIPS) if tta else first
        return np.concatenate([main, prob_sum / len(TTA_FLIPS)], axis=1)

    return predict_flips


def batch_probabilities(logits: np.ndarray, head: OutputHead) -> np.ndarray:
    """Class probabilities ``(N, K, ...)`` float32 of a batch of logits ``(N, K, ...)``."""
    return np.swapaxes(head.probabilities(np.swapaxes(logits, 0, 1)), 0, 1)


def background_probabilities(background: list[float], activation: str) -> list[float]:
    """The class probabilities of a skipped tile's constant logits ``background`` (one per class)."""
    return [float(p) for p in OutputHead(activation).probabilities(np.asarray(background, np.float32))]
