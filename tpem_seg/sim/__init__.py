"""Synthetic two-photon (TPEM) volumes of living mouse cortex with exact labels.

Two channels, as in the reference data of the method: channel 0 an intravascular dye
(vessel lumen bright), channel 1 a sparse neuronal label (Thy1-type: a few bright somata
with dendrites). Labels: 0 background, 1 vessel, 2 neuron (vessel wins where both overlap).

Everything anatomical is drawn in physical space (µm) before any voxel grid exists, so the
same seed and config give the same anatomy at another voxel size as long as the physical
extent ``shape * spacing`` is the same. Coordinates inside this module are ``(z, y, x)`` in µm
with ``z`` the depth below the pia; voxel ``(i, j, k)`` samples the point
``(top_depth_um + (i + 0.5) * sz, (j + 0.5) * sy, (k + 0.5) * sx)``.

Imaging model, in order:

1. Geometry: tubes (polylines with a radius per vertex) and ellipsoids.
2. PSF: an anisotropic Gaussian (FWHM lateral ~0.5 µm, axial ~2.5 µm). It is applied
   analytically: each object's blurred profile is evaluated at the voxel centres. For a
   tube: the blurred slab profile across the local normal (PSF width projected on the
   normal) times the blurred chord of the cross-section along the tangent, which matches a
   brute-force 2D convolution within ~0.02 even for tubes as thin as the axial PSF. For a
   soma: the blurred slab profile along the radius. A point-scanning microscope samples
   the blurred object at points, and at the usual 2–5 µm z-steps a Gaussian filter on the
   voxel grid (sigma ~0.2 voxel axially) would neither blur nor anti-alias: thin
   capillaries between two planes would just vanish or appear at full brightness. The
   analytic form is independent of the voxel size.
3. Background: dim autofluorescence (vessel channel) and neuropil (neuron channel) with a
   low-frequency modulation, displaced by vessels.
4. Depth attenuation ``exp(-(depth - top_depth) / attenuation_length)`` (laser power set for
   the first plane), bleed-through between channels, Poisson photon counts, PMT gain,
   Gaussian read noise and offset, rounded into uint16 (12-bit-like range, no clipping at
   the defaults).
"""

from tpem_seg.sim.config import CHANNEL_NAMES, CLASS_NAMES, SimulatedVolume, SimulationConfig
from tpem_seg.sim.volume import save_simulated, simulate_volume

__all__ = ["CHANNEL_NAMES", "CLASS_NAMES", "SimulationConfig", "SimulatedVolume", "simulate_volume", "save_simulated"]
