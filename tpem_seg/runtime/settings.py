"""A run's settings as values: what to output, from which channels, whether to resample, and tiling."""

from __future__ import annotations

from dataclasses import dataclass, field

from tpem_seg.errors import InputError
from tpem_seg.runtime.outputs import OUTPUTS


@dataclass(frozen=True)
class TileOptions:
    """How tiles are laid and blended.

    overlap: fraction of a tile shared with its neighbour, per axis, in [0, 1).
    batch_size: tiles per backend call (None: the backend's default: on a GPU the torch path picks it
        from free memory, others 4; on a CPU 2, or up to 8 small tiles for torch bf16).
    tta: average the 8 flips of every tile (8x the compute).
    sigma_scale: Gaussian blending sigma as a fraction of the tile (1/8).
    skip_empty: do not run the network on tiles without foreground; they get background logits
        (:data:`~tpem_seg.runtime.loop.EMPTY_LOGIT`). A tile is empty when, in every channel, its
        99th percentile of normalised intensity (0 = the package's low percentile or range end, 1 =
        the high one) is below ``empty_threshold`` (:func:`~tpem_seg.runtime.pipeline.empty_tiles`).
        Needs a percentile or range normalisation.
    empty_threshold: normalised intensity a tile's 99th percentile must reach to count as non-empty.
    """

    overlap: float = 0.25
    batch_size: int | None = None
    tta: bool = False
    sigma_scale: float = 0.125
    skip_empty: bool = False
    empty_threshold: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"overlap {self.overlap} must be in [0, 1), e.g. --overlap 0.25")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size} must be at least 1")
        if self.sigma_scale <= 0:
            raise InputError(f"sigma_scale {self.sigma_scale} must be positive")
        if not 0.0 < self.empty_threshold < 1.0:
            raise InputError(f"empty_threshold {self.empty_threshold} must be in (0, 1), e.g. 0.05")

    @property
    def screen_threshold(self) -> float | None:
        """The empty-tile threshold when tiles are screened (``skip_empty``), else None."""
        return self.empty_threshold if self.skip_empty else None


@dataclass(frozen=True)
class RunSettings:
    """What a :class:`~tpem_seg.runtime.segmenter.Segmenter` run produces and how.

    output: one of :data:`~tpem_seg.runtime.outputs.OUTPUTS`.
    channels: input channels feeding the model, in the model's order (None: all, as they are).
    resample: resample to the package's voxel size when the input's differs.
    tiles: tiling and blending (:class:`TileOptions`).
    block: the block core ``(z, y, x)`` in output voxels (or its text ``"Z,Y,X"``) (:mod:`~tpem_seg.runtime.blocks`: memory set
        by the block, output bit-identical); ``"auto"``: blocks of
        :func:`~tpem_seg.runtime.blocks.default_block` when the plane is wider than one, or the
        volume is resampled, else one pass in z-slabs; ``"off"``: z-slabs (a resampled volume still
        goes by the default block).
    mc_passes: Monte-Carlo dropout passes per tile of a run that also makes an uncertainty map
        (:mod:`~tpem_seg.runtime.uncertainty`; a package without dropout uses the 8 flips instead).
    """

    output: str = "labels"
    channels: tuple[int, ...] | None = None
    resample: bool = True
    tiles: TileOptions = field(default_factory=TileOptions)
    block: tuple[int, int, int] | str = "auto"
    mc_passes: int = 20

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise InputError(f"output {self.output!r} must be one of {OUTPUTS}")
        if isinstance(self.mc_passes, bool) or not isinstance(self.mc_passes, int) or self.mc_passes < 1:
            raise InputError(f"--mc-passes {self.mc_passes} must be a whole number of at least 1, "
                             f"e.g. --mc-passes 20")
        if self.channels is not None:
            channels = tuple(int(c) for c in self.channels)
            if len(set(channels)) != len(channels) or min(channels, default=0) < 0:
                raise InputError(f"--channels {','.join(map(str, channels))} must name distinct channel indices "
                                 f"from 0, e.g. 0,1")
            object.__setattr__(self, "channels", channels)
        if self.block not in ("auto", "off"):
            object.__setattr__(self, "block", _block_sizes(self.block))


def _block_sizes(block) -> tuple[int, int, int]:
    """``(z, y, x)`` from three sizes or their ``"Z,Y,X"`` text."""
    hint = "must be auto, off or three positive sizes Z,Y,X, e.g. --block 64,1024,1024"
    try:
        sizes = tuple(int(b) for b in (block.split(",") if isinstance(block, str) else block))
    except (TypeError, ValueError):
        raise InputError(f"block {block!r} {hint}") from None
    if len(sizes) != 3 or min(sizes) < 1:
        raise InputError(f"block {block!r} {hint}")
    return sizes  # type: ignore[return-value]
