"""Tiles of one plan through a backend and the one stitch loop, on the CPU path or the GPU path.

:class:`TileEngine` is what a run needs from the model and its settings (backend, classes,
activation, tile options, blending weights); it holds no run state. Each call of
:meth:`TileEngine.run` counts into the caller's :class:`RunState`, so a Segmenter run, a block of
a run and training evaluation each keep their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from tpem_seg.runtime.loop import background_logits, host_predictor, stitch_loop, with_flips
from tpem_seg.runtime.normalize import Normalizer
from tpem_seg.runtime.outputs import OutputHead
from tpem_seg.runtime.pipeline import iter_tiles, prefetch
from tpem_seg.runtime.settings import TileOptions
from tpem_seg.runtime.stitch import Stitcher
from tpem_seg.runtime.tiling import gaussian_weights
from tpem_seg.runtime.uncertainty import UncertaintyPlan, background_probabilities, pass_predictor


@dataclass
class RunState:
    """What one run did so far: tiles, of them skipped as empty, and tiles per network call."""

    tiles: int = 0
    skipped: int = 0
    batch_size: int | None = None


class TileEngine:
    """Runs tile plans of one network.

    Args:
        infer: tiles ``(N, C, D, H, W)`` float32 -> logits ``(N, K, D, H, W)`` float32 (numpy), e.g.
            ``backend.infer``; tiles arrive in batches of ``batch_size``.
        tile: the network's tile ``(D, H, W)``; n_classes: K; activation: ``softmax`` or ``sigmoid``.
        options: tiling, blending, flips and empty-tile screening.
        batch_size: tiles per network call on the CPU path.
        backend: a backend that computes on torch tensors (``supports_device_tensors``): the run
            then takes the GPU path (:mod:`~tpem_seg.runtime.gpu`), which picks its own batch size
            unless ``options.batch_size`` is set.
        uncertainty: measure uncertainty as planned (:mod:`~tpem_seg.runtime.uncertainty`): every
            emitted block is then ``(output, uncertainty map (dz, Y, X) float32)``, on the host path;
            ``infer_mc`` runs one Monte-Carlo dropout pass (for the ``mc-dropout`` method).
    """

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], tile: Sequence[int], n_classes: int,
                 activation: str, options: TileOptions, batch_size: int, backend=None,
                 uncertainty: UncertaintyPlan | None = None,
                 infer_mc: Callable[[np.ndarray], np.ndarray] | None = None):
        if uncertainty is not None and uncertainty.method == "mc-dropout" and infer_mc is None:
            raise ValueError("Monte-Carlo dropout passes need infer_mc")
        self.infer = infer
        self.tile = tuple(int(t) for t in tile)
        self.n_classes = n_classes
        self.activation = activation
        self.options = options
        self.batch_size = batch_size
        self.backend = backend
        self.uncertainty = uncertainty
        self.infer_mc = infer_mc
        self.weights = gaussian_weights(self.tile, options.sigma_scale)
        self.background = background_logits(n_classes, activation)

    def run(self, volume, plan, normalizer: Normalizer, channels: Sequence[int] | None, output: str,
            emit: Callable[[int, np.ndarray], None], state: RunState, progress: bool = False) -> None:
        """Tile, infer and blend ``volume`` over ``plan``; ``emit(first_plane, block)`` per finished slab.

        ``block`` is the ``output`` of the slab's ``dz`` planes that ``plan.output_part`` keeps:
        labels ``(dz, Y, X)`` uint8, probabilities ``(K, dz, Y, X)`` float16 or logits
        ``(K, dz, Y, X)`` float32, as numpy arrays, in z order.
        """
        head = OutputHead(self.activation, output, uncertainty=self.uncertainty is not None)
        with tqdm(total=plan.n_tiles, unit="tile", desc="segment", disable=not progress, leave=False) as bar:
            if self.backend is not None and self.uncertainty is None:
                from tpem_seg.runtime import gpu  # imports torch: only for backends that already run on it

                run = gpu.GpuStitchRun(self.backend, plan, self.weights, self.n_classes, head, self.options,
                                       self.background, chosen_batch=state.batch_size)
                counters = run.run(volume, normalizer, channels, emit, bar.update)
                state.batch_size = run.backoff.batch_size
            else:
                predict, channels_out, background = self._host_predictor()
                stitcher = Stitcher(channels_out, plan.padded, plan.tile, self.weights)
                items = prefetch(iter_tiles(volume, plan, normalizer, channels, self.batch_size,
                                            self.options.screen_threshold))
                counters = stitch_loop(items, plan, stitcher, host_predictor(predict), head, background,
                                       emit, bar.update)
                state.batch_size = self.batch_size
        state.tiles += counters.tiles
        state.skipped += counters.skipped

    def _host_predictor(self) -> tuple[Callable[[np.ndarray], np.ndarray], int, list[float]]:
        """The host path's predictor, the channels it returns per voxel, and their constant for skipped tiles."""
        if self.uncertainty is None:
            return (with_flips(self.infer) if self.options.tta else self.infer), self.n_classes, self.background
        predict = pass_predictor(self.uncertainty, self.infer, self.infer_mc, self.activation, self.options.tta)
        return predict, 2 * self.n_classes, self.background + background_probabilities(self.background,
                                                                                        self.activation)
