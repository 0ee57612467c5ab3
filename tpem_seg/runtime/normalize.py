"""Per-channel intensity normalisation, computed once over the whole volume.

Statistics come from a sample of evenly spaced planes, never from single
tiles: per-tile statistics shift the intensity scale from tile to tile and
make seams. Training uses this same code, so the network sees identical inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tpem_seg.errors import InputError
from tpem_seg.models.manifest import NormalizationSpec

log = logging.getLogger(__name__)

#: At most this many planes and voxels per channel feed the percentile estimate.
SAMPLE_PLANES = 32
SAMPLE_VOXELS = 4_000_000

NON_FINITE = "the volume contains NaN or Inf values; replace them (e.g. numpy.nan_to_num) before segmenting"


@dataclass(frozen=True)
class Normalizer:
    """Maps raw intensities to network inputs: ``(x - low) / (high - low)``, per channel.

    ``low`` and ``high`` have one entry per channel (in the model's channel order).
    """

    low: np.ndarray
    high: np.ndarray
    clip: bool = True

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """Normalise ``block`` of shape ``(C, ...)`` to float32; raise InputError on NaN/Inf."""
        if np.issubdtype(block.dtype, np.floating) and not np.isfinite(block).all():
            raise InputError(NON_FINITE)
        out = block.astype(np.float32, copy=True)
        shape = (-1,) + (1,) * (out.ndim - 1)
        out -= self.low.reshape(shape)
        out *= (1.0 / self.scale).reshape(shape)
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out

    @property
    def scale(self) -> np.ndarray:
        span = (self.high - self.low).astype(np.float32)
        return np.where(span > 0, span, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"low": [float(v) for v in self.low], "high": [float(v) for v in self.high]}


def sample_planes(volume, channels: Sequence[int] | None = None, n_planes: int = SAMPLE_PLANES,
                  max_voxels: int = SAMPLE_VOXELS) -> np.ndarray:
    """A strided sample ``(C, N)`` of voxels from up to ``n_planes`` evenly spaced z-planes."""
    z = volume.shape_zyx[0]
    planes = np.unique(np.linspace(0, z - 1, num=min(n_planes, z)).round().astype(int))
    _, y, x = volume.shape_zyx
    stride = max(1, int(np.ceil(np.sqrt(len(planes) * y * x / max_voxels))))
    # strided reads: a view into whole planes would keep every plane alive (16 x 128 MB for 8192²)
    parts = [volume.read_czyx(int(p), int(p) + 1, channels, yx_step=stride)[:, 0] for p in planes]
    return np.stack(parts, axis=1).reshape(len(parts[0]), -1)


def fit_normalizer(volume, spec: NormalizationSpec, channels: Sequence[int] | None = None) -> Normalizer:
    """Compute the normaliser for ``volume`` (a :class:`~tpem_seg.io.Volume`) under ``spec``."""
    n_channels = len(channels) if channels is not None else volume.n_channels
    if spec.mode == "none":
        return Normalizer(np.zeros(n_channels, np.float32), np.ones(n_channels, np.float32), clip=False)
    if spec.mode == "range":
        lo, hi = spec.range
        return Normalizer(np.full(n_channels, lo, np.float32), np.full(n_channels, hi, np.float32), spec.clip)
    sample = sample_planes(volume, channels).astype(np.float64)
    if not np.isfinite(sample).all():
        raise InputError(NON_FINITE)
    low = np.percentile(sample, spec.percentiles[0], axis=1)
    high = np.percentile(sample, spec.percentiles[1], axis=1)
    for c in np.flatnonzero(high <= low):
        log.warning("channel %d is constant (%.4g) in the sample; it will normalise to 0", int(c), low[c])
    log.debug("normaliser low=%s high=%s", low, high)
    return Normalizer(low.astype(np.float32), high.astype(np.float32), spec.clip)
