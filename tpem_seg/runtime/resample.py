"""Bring a volume to the model's voxel size and the logits back (linear interpolation), streaming.

Linear interpolation is local: an output voxel needs the two input voxels around it per axis. So
both directions work on boxes (blocks) with a one-voxel halo, never on the whole volume. The grid
is scipy's ``ndimage.zoom(order=1, grid_mode=False)`` one (corners aligned: output index ``o`` sits
at input coordinate ``o * (n_in - 1) / (n_out - 1)``), computed in float64 like scipy.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tpem_seg.runtime.pipeline import read_box

#: Relative voxel-size difference below which no resampling is done.
TOLERANCE = 0.05

Box = tuple[tuple[int, int], ...]


def needs_resampling(spacing: Sequence[float] | None, target: Sequence[float] | None,
                     tolerance: float = TOLERANCE) -> bool:
    if spacing is None or target is None:
        return False
    return any(abs(s - t) > tolerance * t for s, t in zip(spacing, target))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def _scale(n_in: int, n_out: int) -> float:
    """Input coordinate step per output voxel (corners aligned; 1 for a single output voxel, as scipy)."""
    return (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0


def source_span(lo: int, hi: int, n_in: int, n_out: int) -> tuple[int, int]:
    """Input voxels ``[a, b)`` that output voxels ``[lo, hi)`` interpolate from (the one-voxel halo)."""
    scale = _scale(n_in, n_out)
    a = min(int(math.floor(lo * scale)), n_in - 1)
    b = min(int(math.floor((hi - 1) * scale)) + 2, n_in)
    return a, max(b, a + 1)


def source_box(box: Box, shape_in: Sequence[int], shape_out: Sequence[int]) -> Box:
    return tuple(source_span(lo, hi, n, m) for (lo, hi), n, m in zip(box, shape_in, shape_out))


#: Output voxels (times channels) interpolated at once: bounds the float64 temporaries (~32 MB each).
CHUNK_VOXELS = 4_000_000


def interpolate(data: np.ndarray, origin: Sequence[int], box: Box, shape_in: Sequence[int],
                shape_out: Sequence[int]) -> np.ndarray:
    """Output voxels ``box`` (of a grid ``shape_out``) from ``data (C, dz, dy, dx)``, the input voxels of
    a grid ``shape_in`` starting at ``origin`` (it must hold :func:`source_box`). float32 ``(C, ...)``.

    Works through ``box`` a few planes at a time (each voxel's value does not depend on the split).
    """
    (z0, z1), rest = box[0], tuple(box[1:])
    plane = data.shape[0] * (rest[0][1] - rest[0][0]) * (rest[1][1] - rest[1][0])
    step = max(1, CHUNK_VOXELS // max(plane, 1))
    out = np.empty((data.shape[0], z1 - z0, *(hi - lo for lo, hi in rest)), dtype=np.float32)
    for a in range(z0, z1, step):
        b = min(a + step, z1)
        sa, sb = source_span(a, b, shape_in[0], shape_out[0])
        part = data[:, sa - origin[0]:sb - origin[0]]
        out[:, a - z0:b - z0] = _interpolate(part, (sa, *origin[1:]), ((a, b), *rest), shape_in, shape_out)
    return out


def _interpolate(data: np.ndarray, origin: Sequence[int], box: Box, shape_in: Sequence[int],
                 shape_out: Sequence[int]) -> np.ndarray:
    out = np.asarray(data, dtype=np.float64)
    for axis, ((lo, hi), start, n_in, n_out) in enumerate(zip(box, origin, shape_in, shape_out), start=1):
        coords = np.arange(lo, hi, dtype=np.float64) * _scale(n_in, n_out)
        below = np.minimum(np.floor(coords).astype(np.intp), n_in - 1)
        above = np.minimum(below + 1, n_in - 1)
        frac = coords - below
        shape = [1] * out.ndim
        shape[axis] = len(coords)
        frac = frac.reshape(shape)
        out = np.take(out, below - start, axis=axis) * (1.0 - frac) + np.take(out, above - start, axis=axis) * frac
    return out.astype(np.float32)


#: Voxels per plane strip that :meth:`ResampledVolume.read_czyx` computes at a time for a sample.
STRIP_VOXELS = 1 << 22


class ResampledVolume:
    """A volume seen at another voxel size, computed box by box on read (nothing is held).

    ``shape_zyx`` is :func:`resampled_shape`; it offers what the runtime reads volumes through
    (``read_czyx``, ``read_box``, ``n_channels``, ``shape_zyx``, ``spacing``), in float32, with
    ``channels`` of the source selected once.
    """

    axes = "CZYX"

    def __init__(self, source, target: Sequence[float], channels: Sequence[int] | None = None):
        self.source = source
        self.channels = None if channels is None else list(channels)
        self.spacing = tuple(float(t) for t in target)
        self.shape_zyx = resampled_shape(source.shape_zyx, source.spacing, target)
        self.n_channels = len(self.channels) if self.channels is not None else source.n_channels
        self.channel_names = source.channel_names

    def read_box(self, box: Box, channels: Sequence[int] | None = None) -> np.ndarray:
        """Voxels ``box`` (``(lo, hi)`` per axis z, y, x of this grid) as ``(C, dz, dy, dx)`` float32."""
        src = source_box(box, self.source.shape_zyx, self.shape_zyx)
        data = read_box(self.source, src, self.channels).astype(np.float32)
        out = interpolate(data, [a for a, _ in src], box, self.source.shape_zyx, self.shape_zyx)
        return out if channels is None else out[list(channels)]

    def read_czyx(self, z0: int = 0, z1: int | None = None, channels: Sequence[int] | None = None,
                  yx_step: int = 1) -> np.ndarray:
        """Planes ``z0:z1`` as ``(C, dz, Y, X)`` float32; with ``yx_step``, every n-th voxel in y and x,
        computed in strips of rows (a sample of wide planes, without a whole plane in memory)."""
        z1 = self.shape_zyx[0] if z1 is None else z1
        _, y, x = self.shape_zyx
        if yx_step == 1:
            return self.read_box(((z0, z1), (0, y), (0, x)), channels)
        rows = yx_step * max(1, STRIP_VOXELS // (yx_step * x))  # a multiple of the step: strips stay aligned
        strips = [self.read_box(((z0, z1), (y0, min(y0 + rows, y)), (0, x)), channels)[..., ::yx_step, ::yx_step]
                  for y0 in range(0, y, rows)]
        return np.concatenate(strips, axis=-2)

