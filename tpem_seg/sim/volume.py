"""The simulator: anatomy, then rendering through the PSF, textures and the detector; and writing it out."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import numpy as np

from tpem_seg.io import write_volume
from tpem_seg.sim.config import SimulatedVolume, SimulationConfig
from tpem_seg.sim.geometry import Anatomy
from tpem_seg.sim.neurons import draw_neurons
from tpem_seg.sim.optics import FWHM_TO_SIGMA, Canvas
from tpem_seg.sim.textures import fine_texture, low_frequency_field
from tpem_seg.sim.vessels import draw_capillaries, draw_penetrating, draw_surface_vessels

logger = logging.getLogger(__name__)


def draw_anatomy(rng: np.random.Generator, cfg: SimulationConfig, lo: np.ndarray, hi: np.ndarray) -> Anatomy:
    """Vessels first (surface, penetrating, capillaries between them), then neurons around them,
    in the box ``lo..hi`` (µm, ``(z, y, x)``)."""
    surface = draw_surface_vessels(rng, cfg, lo, hi)
    penetrating = draw_penetrating(rng, cfg, lo, hi, surface)
    capillaries = draw_capillaries(rng, cfg, lo, hi, penetrating)
    vessels = surface + penetrating + capillaries
    somata, dendrites = draw_neurons(rng, cfg, lo, hi, vessels)
    logger.debug("anatomy: %d surface, %d penetrating, %d capillary tubes; %d somata, %d dendrites",
                 len(surface), len(penetrating), len(capillaries), len(somata), len(dendrites))
    return Anatomy(vessels, somata, dendrites)



def simulate_volume(
    shape: tuple[int, int, int] = (32, 256, 256),
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
    seed: int | None = 0,
    config: SimulationConfig | None = None,
    **options: Any,
) -> SimulatedVolume:
    """Simulate a two-channel TPEM volume of mouse cortex with exact labels.

    Args:
        shape: ``(Z, Y, X)`` voxels.
        spacing: voxel size ``(z, y, x)`` in µm.
        seed: same seed, shape, spacing and config give a bit-identical result. The anatomy
            depends only on the seed, the config and the physical extent ``shape * spacing``.
            None draws fresh entropy (not reproducible).
        config: a :class:`SimulationConfig` (defaults when None).
        **options: fields of :class:`SimulationConfig` overriding ``config``.

    Returns:
        :class:`SimulatedVolume` with ``image`` ``(2, Z, Y, X)`` uint16 (vessel, neuron) and
        ``labels`` ``(Z, Y, X)`` uint8 (0 background, 1 vessel, 2 neuron).

    Cost: about 0.5 µs and 80 bytes of peak memory per voxel on one CPU core, roughly
    linear in the number of voxels (1 s for (32, 256, 256), 4 s for (25, 512, 512)).
    """
    t_start = time.perf_counter()
    cfg = config if config is not None else SimulationConfig()
    if options:
        known = {f.name for f in dataclasses.fields(SimulationConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown simulation option(s) {unknown}; valid ones are the fields of SimulationConfig")
        cfg = dataclasses.replace(cfg, **options)
    cfg.validate()
    shape = tuple(int(n) for n in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape {shape} must be three positive voxel counts (Z, Y, X)")
    spacing_arr = np.asarray(spacing, dtype=float)
    if spacing_arr.shape != (3,) or not np.all(np.isfinite(spacing_arr) & (spacing_arr > 0)):
        raise ValueError(f"spacing {spacing} must be three positive voxel sizes (z, y, x) in µm")

    anatomy_rng, texture_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    extent = np.asarray(shape) * spacing_arr
    top = float(cfg.top_depth_um)
    lo = np.array([max(0.0, top - cfg.margin_um), -cfg.margin_um, -cfg.margin_um])
    hi = np.array([top + extent[0] + cfg.margin_um, extent[1] + cfg.margin_um, extent[2] + cfg.margin_um])
    anatomy = draw_anatomy(anatomy_rng, cfg, lo, hi)
    t_anatomy = time.perf_counter()

    sigma = np.asarray(cfg.psf_fwhm_um, dtype=float) * FWHM_TO_SIGMA
    vessel = Canvas(shape, spacing_arr, top, sigma)
    for tube in anatomy.vessels:
        vessel.add_tube(tube)
    neuron = Canvas(shape, spacing_arr, top, sigma)
    for soma in anatomy.somata:
        neuron.add_soma(soma, cfg.nucleus_fraction, cfg.nucleus_brightness)
    for tube in anatomy.dendrites:
        neuron.add_tube(tube)
    t_render = time.perf_counter()

    labels = np.zeros(shape, np.uint8)
    labels[neuron.mask] = 2
    labels[vessel.mask] = 1  # vessel wins where both overlap

    lf_vessel = low_frequency_field(texture_rng, shape, spacing_arr)
    lf_neuron = low_frequency_field(texture_rng, shape, spacing_arr)
    lumen = fine_texture(texture_rng, shape, spacing_arr, 1.5)
    lumen *= cfg.lumen_texture
    lumen += 1.0
    np.clip(lumen, 0.3, None, out=lumen)
    neuropil = fine_texture(texture_rng, shape, spacing_arr, 1.0)
    neuropil *= 0.3
    neuropil += 1.0
    np.clip(neuropil, 0.2, None, out=neuropil)

    free = 1.0 - vessel.occupancy  # tissue not displaced by vessels
    ch0 = vessel.signal * lumen + cfg.vessel_background * lf_vessel * free
    ch1 = neuron.signal + cfg.neuropil_background * lf_neuron * neuropil * free * (1.0 - neuron.occupancy)
    del lumen, neuropil, lf_vessel, lf_neuron, free, vessel, neuron  # bound peak memory
    mixed0 = ch0 + cfg.bleedthrough_neuron_to_vessel * ch1
    mixed1 = ch1 + cfg.bleedthrough_vessel_to_neuron * ch0
    del ch0, ch1

    depth = (np.arange(shape[0]) + 0.5) * spacing_arr[0]
    attenuation = np.exp(-depth / cfg.attenuation_length_um).astype(np.float32)[:, None, None]
    image = np.empty((2, *shape), np.uint16)
    for c, clean in enumerate((mixed0, mixed1)):
        expected = clean * (attenuation * np.float32(cfg.photons_per_unit))
        if cfg.noise:
            photons = noise_rng.poisson(expected).astype(np.float32)
            adu = photons * np.float32(cfg.gain_adu_per_photon)
            adu += noise_rng.standard_normal(size=shape, dtype=np.float32) * np.float32(cfg.read_noise_adu)
        else:
            adu = expected * np.float32(cfg.gain_adu_per_photon)
        adu += np.float32(cfg.offset_adu)
        np.rint(adu, out=adu)
        np.clip(adu, 0, np.iinfo(np.uint16).max, out=adu)
        image[c] = adu
    t_end = time.perf_counter()
    logger.info(
        "simulated %s at %s µm (seed %s) in %.2f s (anatomy %.2f, render %.2f, image %.2f); "
        "vessel %.1f%%, neuron %.1f%%",
        shape, tuple(float(v) for v in spacing_arr), seed, t_end - t_start, t_anatomy - t_start, t_render - t_anatomy,
        t_end - t_render, 100 * np.mean(labels == 1), 100 * np.mean(labels == 2),
    )
    return SimulatedVolume(image=image, labels=labels, spacing=tuple(float(s) for s in spacing_arr),  # type: ignore[arg-type]
                           config=cfg, seed=seed)


def save_simulated(sim: SimulatedVolume, image_path: str | os.PathLike,
                   labels_path: str | os.PathLike | None = None) -> None:
    """Write the image and (when ``labels_path`` is given) the labels through :func:`tpem_seg.io.write_volume`.

    For ``.tif``: the image becomes a 2-channel ImageJ hyperstack (pages ``ZCYX``, uint16), the labels
    ``ZYX`` uint8; both carry the voxel size, so Fiji and napari open them at the right scale. Each
    file appears under its name only when complete.
    """
    write_volume(image_path, sim.image, "CZYX", sim.spacing, sim.channel_names)
    logger.info("wrote %s %s %s", image_path, sim.image.shape, sim.image.dtype)
    if labels_path is not None:
        write_volume(labels_path, sim.labels, "ZYX", sim.spacing)
        logger.info("wrote %s %s %s", labels_path, sim.labels.shape, sim.labels.dtype)
