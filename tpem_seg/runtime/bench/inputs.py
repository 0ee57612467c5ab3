"""The benchmark's input: a volume file or a simulated two-photon stack, cropped, and its tiles."""

from __future__ import annotations

import numpy as np

from tpem_seg.errors import InputError
from tpem_seg.io import Volume, read_volume
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.bench.config import BenchSettings
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.runtime.pipeline import TileBatch, iter_tiles, make_plan


def parse_crop(text: str | None) -> tuple[slice, slice, slice] | None:
    """``"0:30,0:256,0:256"`` -> z, y, x slices (empty bounds allowed, e.g. ``":,:256,:256"``)."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        slices = tuple(slice(*[int(v) if v else None for v in p.split(":")]) for p in parts)
    except ValueError:
        slices = ()
    if len(slices) != 3 or any(p.count(":") != 1 for p in parts):
        raise InputError(f"--crop {text!r} must be three start:stop ranges z,y,x, e.g. 0:30,0:256,0:256")
    return slices  # type: ignore[return-value]


def simulated_stack(shape_zyx: tuple[int, int, int], channels: int, seed: int = 0) -> np.ndarray:
    """A simulated two-photon stack ``(channels, Z, Y, X)`` uint16 (:mod:`tpem_seg.sim`):
    its vessel and neuron channels, repeated in turn to ``channels``."""
    from tpem_seg.sim import simulate_volume

    image = simulate_volume(shape_zyx, seed=seed).image
    return np.ascontiguousarray(image[np.arange(channels) % len(image)])


def load_input(spec: str, channels: int, crop: tuple[slice, slice, slice] | None = None,
               axes: str | None = None, seed: int = 0) -> tuple[Volume, dict]:
    """The benchmark volume, in memory as ``CZYX``, and a description of it for the report.

    ``spec`` is a volume file, or ``synthetic:Z,Y,X`` for :func:`simulated_stack` with the
    model's ``channels``.
    """
    if spec.startswith("synthetic:"):
        try:
            shape = tuple(int(v) for v in spec.split(":", 1)[1].split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"{spec!r} must be synthetic:Z,Y,X with three positive sizes, e.g. synthetic:64,256,256")
        data, spacing, source = simulated_stack(shape, channels, seed), None, f"simulated (seed {seed})"
    else:
        volume = read_volume(spec, axes=axes)
        data, spacing, source = volume.read_czyx(), volume.spacing, str(spec)
    if crop is not None:
        data = np.ascontiguousarray(data[(slice(None), *crop)])
        if 0 in data.shape:
            raise InputError(f"the crop leaves an empty volume ({data.shape}); check --crop")
    description = {"source": source, "shape_czyx": list(data.shape), "dtype": str(data.dtype),
                   "crop": None if crop is None else [[s.start, s.stop] for s in crop],
                   "spacing": list(spacing) if spacing else None}
    return Volume(data, "CZYX", spacing), description


def plan_tiles_for(volume: Volume, package: ModelPackage, settings: BenchSettings) -> np.ndarray:
    """All normalised tiles ``(n, C, D, H, W)`` float32 of ``volume``, as the runs see them."""
    manifest = package.manifest
    normalizer = fit_normalizer(volume, manifest.normalization)
    plan = make_plan(volume.shape_zyx, manifest.tile, settings.overlap)
    batches = [item.tiles for item in iter_tiles(volume, plan, normalizer, None, len(plan.yx_origins))
               if isinstance(item, TileBatch)]
    return np.concatenate(batches)
