"""What a simulation is made from and what it returns: :class:`SimulationConfig` (anatomy, optics,
detector; lengths in µm) and :class:`SimulatedVolume`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CHANNEL_NAMES = ["vessel", "neuron"]
CLASS_NAMES = ["background", "vessel", "neuron"]


@dataclass(frozen=True)
class SimulationConfig:
    """Anatomy, optics and detector of a simulated volume. Lengths in µm.

    Ranges ``(lo, hi)`` are sampled per object (uniform, or log-uniform for vessel radii,
    so thin vessels are more common than thick ones).
    """

    # --- field of view ---
    #: Depth below the pia of the top face of the volume (µm). At 0 the surface
    #: (pial) vessels lie in the first ~30 µm.
    top_depth_um: float = 0.0
    #: Anatomy is drawn in a box this much larger than the volume on every side (µm;
    #: not above the pia), so that density does not drop at the borders.
    margin_um: float = 30.0

    # --- vessels ---
    #: Capillary length per volume, mm/mm³ (mouse cortex: about 0.6–1 m/mm³).
    capillary_length_density: float = 900.0
    capillary_radius_um: tuple[float, float] = (2.0, 3.0)
    #: Typical sideways excursion of a capillary between two branch points (µm).
    capillary_tortuosity_um: float = 4.0
    #: Penetrating arterioles and venules per mm² of cortical surface; they run roughly
    #: along z (perpendicular to the surface), tilted up to ``penetrating_tilt_deg``.
    penetrating_density: float = 40.0
    penetrating_radius_um: tuple[float, float] = (4.0, 10.0)
    penetrating_tilt_deg: float = 20.0
    #: Pial (surface) vessel length per mm² of cortical surface, branches included.
    surface_vessel_density: float = 4.0
    surface_radius_um: tuple[float, float] = (6.0, 15.0)
    #: Mean distance between side branches along a surface vessel (µm).
    surface_branch_spacing_um: float = 150.0

    # --- neurons (sparse, Thy1-type) ---
    #: Labelled somata per mm³ (about a tenth of cortical neurons).
    soma_density: float = 10000.0
    soma_diameter_um: tuple[float, float] = (10.0, 20.0)
    #: Nucleus diameter as a fraction of the soma's, and its brightness relative to the
    #: cytoplasm (1.0: no visible nucleus).
    nucleus_fraction: float = 0.55
    nucleus_brightness: float = 0.6
    dendrites_per_soma: tuple[int, int] = (2, 5)
    dendrite_radius_um: tuple[float, float] = (0.6, 1.5)
    dendrite_length_um: tuple[float, float] = (30.0, 120.0)

    # --- brightness (relative units; 1.0 = photons_per_unit photons) ---
    vessel_brightness: tuple[float, float] = (0.7, 1.0)
    neuron_brightness: tuple[float, float] = (0.5, 1.0)
    vessel_background: float = 0.06
    neuropil_background: float = 0.12
    #: Relative standard deviation of the texture inside vessels (flowing blood cells).
    lumen_texture: float = 0.15
    #: Fraction of each channel's signal that appears in the other one.
    bleedthrough_vessel_to_neuron: float = 0.03
    bleedthrough_neuron_to_vessel: float = 0.02

    # --- optics ---
    #: Gaussian PSF full width at half maximum, (z, y, x) µm.
    psf_fwhm_um: tuple[float, float, float] = (2.5, 0.5, 0.5)
    #: 1/e length of the detected signal with depth (µm).
    attenuation_length_um: float = 150.0

    # --- detector ---
    #: Expected photons per voxel at relative brightness 1.0, at the top of the volume.
    photons_per_unit: float = 40.0
    gain_adu_per_photon: float = 20.0
    read_noise_adu: float = 8.0
    offset_adu: float = 200.0
    #: False: noiseless expected values (for tests and inspection).
    noise: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first field with an impossible value."""
        for name in ("margin_um", "capillary_length_density", "capillary_tortuosity_um", "penetrating_density",
                     "surface_vessel_density", "soma_density", "vessel_background", "neuropil_background",
                     "lumen_texture", "bleedthrough_vessel_to_neuron", "bleedthrough_neuron_to_vessel",
                     "photons_per_unit", "gain_adu_per_photon", "read_noise_adu", "offset_adu", "top_depth_um"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"SimulationConfig.{name}={value!r} must be a finite number >= 0")
        for name in ("attenuation_length_um", "surface_branch_spacing_um"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"SimulationConfig.{name}={value!r} must be > 0")
        for name in ("capillary_radius_um", "penetrating_radius_um", "surface_radius_um", "soma_diameter_um",
                     "dendrite_radius_um", "dendrite_length_um", "vessel_brightness", "neuron_brightness",
                     "dendrites_per_soma"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi) or (name != "dendrites_per_soma" and not lo > 0):
                raise ValueError(f"SimulationConfig.{name}={(lo, hi)!r} must be a range 0 < lo <= hi")
        if len(self.psf_fwhm_um) != 3 or any(not (f >= 0) for f in self.psf_fwhm_um):
            raise ValueError(f"SimulationConfig.psf_fwhm_um={self.psf_fwhm_um!r} must be three numbers >= 0 (z, y, x)")
        if not (0 < self.nucleus_fraction < 1 and 0 <= self.nucleus_brightness <= 1):
            raise ValueError("SimulationConfig.nucleus_fraction must be in (0, 1) and nucleus_brightness in [0, 1]")


@dataclass
class SimulatedVolume:
    """A simulated two-channel volume and its labels.

    Attributes:
        image: ``(2, Z, Y, X)`` uint16, channel 0 vessel, channel 1 neuron (detector ADU).
        labels: ``(Z, Y, X)`` uint8, 0 background, 1 vessel, 2 neuron.
        spacing: voxel size ``(z, y, x)`` in µm.
        channel_names: ``["vessel", "neuron"]``.
        config: the configuration that made it.
        seed: the seed that made it.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    channel_names: list[str] = field(default_factory=lambda: list(CHANNEL_NAMES))
    config: SimulationConfig | None = None
    seed: int | None = None

