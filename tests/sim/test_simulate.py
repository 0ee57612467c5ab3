"""The synthetic TPEM simulator: reproducibility, labels, contrast, optics, units, files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tpem_seg.sim import SimulatedVolume, SimulationConfig, save_simulated, simulate_volume


@pytest.fixture(scope="module")
def default_sim() -> SimulatedVolume:
    return simulate_volume()  # (32, 256, 256) at (2, 1, 1) µm, seed 0: about 1 s


def test_shapes_dtypes_and_metadata(default_sim):
    sim = default_sim
    assert sim.image.shape == (2, 32, 256, 256) and sim.image.dtype == np.uint16
    assert sim.labels.shape == (32, 256, 256) and sim.labels.dtype == np.uint8
    assert sim.spacing == (2.0, 1.0, 1.0)
    assert sim.channel_names == ["vessel", "neuron"]
    assert isinstance(sim.config, SimulationConfig)


def test_label_classes_present_with_plausible_fractions(default_sim):
    labels = default_sim.labels
    assert set(np.unique(labels)) == {0, 1, 2}
    vessel, neuron = np.mean(labels == 1), np.mean(labels == 2)
    # Real in vivo stacks (vesselnn_2pm) have 3-40 % vessel; capillary beds alone ~2 %.
    assert 0.02 < vessel < 0.25, vessel
    assert 0.005 < neuron < 0.10, neuron


def test_same_seed_is_bit_identical_and_seeds_differ():
    kwargs = dict(shape=(6, 48, 40), spacing=(3.0, 1.5, 1.5))
    a, b = simulate_volume(seed=7, **kwargs), simulate_volume(seed=7, **kwargs)
    c = simulate_volume(seed=8, **kwargs)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_structures_are_brighter_in_their_own_channel(default_sim):
    img, labels = default_sim.image.astype(np.float64), default_sim.labels
    vessel, neuron = labels == 1, labels == 2
    assert img[0][vessel].mean() > 2.0 * img[0][~vessel].mean()
    assert img[1][neuron].mean() > 1.5 * img[1][~neuron].mean()
    # Bleed-through is a few %: vessels are not bright in the neuron channel.
    assert img[1][vessel].mean() < img[1][neuron].mean()


def test_signal_attenuates_with_depth(default_sim):
    img, labels = default_sim.image[0].astype(np.float64), default_sim.labels
    q = labels.shape[0] // 4
    top = img[:q][labels[:q] == 1].mean()
    bottom = img[-q:][labels[-q:] == 1].mean()
    assert top > bottom


def test_psf_blurs_z_more_than_xy():
    # Noise, textures and backgrounds off: the only difference between the two runs is the
    # PSF. Blur lowers the squared gradient; the axial PSF (FWHM 2.5 µm = 5 voxels here) far
    # more than the lateral one (0.5 µm, half a voxel).
    kwargs = dict(shape=(32, 64, 64), spacing=(0.5, 1.0, 1.0), seed=2, noise=False, lumen_texture=0.0,
                  vessel_background=0.0, bleedthrough_neuron_to_vessel=0.0)
    sharp = simulate_volume(psf_fwhm_um=(0.0, 0.0, 0.0), **kwargs)
    blurred = simulate_volume(**kwargs)
    assert np.array_equal(sharp.labels, blurred.labels) and np.any(sharp.labels == 1)
    a, b = sharp.image[0].astype(np.float64), blurred.image[0].astype(np.float64)
    kept = [np.mean(np.diff(b, axis=ax) ** 2) / np.mean(np.diff(a, axis=ax) ** 2) for ax in (0, 1, 2)]
    assert kept[0] < 0.25, kept
    assert kept[0] < 0.6 * min(kept[1], kept[2]), kept


def test_anatomy_is_in_physical_units():
    # Same physical extent at twice the resolution: same anatomy, so the same fractions.
    kwargs = dict(seed=0, top_depth_um=40.0)
    coarse = simulate_volume((12, 96, 96), (2.0, 1.0, 1.0), **kwargs).labels
    fine = simulate_volume((24, 192, 192), (1.0, 0.5, 0.5), **kwargs).labels
    for cls in (1, 2):
        fc, ff = np.mean(coarse == cls), np.mean(fine == cls)
        assert fc > 0.002 and abs(ff - fc) < 0.1 * fc, (cls, fc, ff)


def test_uint16_range_is_realistic_and_not_saturated(default_sim):
    img = default_sim.image
    assert 0 < img.min() and img.max() < 4096  # offset above 0, inside a 12-bit-like range
    assert img[0].max() > 4 * default_sim.config.offset_adu  # but using a good part of it


def test_options_validate():
    with pytest.raises(TypeError, match="unknown simulation option"):
        simulate_volume((4, 16, 16), no_such_option=1)
    with pytest.raises(ValueError, match="soma_diameter_um"):
        simulate_volume((4, 16, 16), soma_diameter_um=(20.0, 10.0))
    with pytest.raises(ValueError, match="spacing"):
        simulate_volume((4, 16, 16), spacing=(0.0, 1.0, 1.0))
    sim = simulate_volume((6, 48, 48), soma_density=0.0)
    assert not np.any(sim.labels == 2)


def test_save_round_trip(tmp_path: Path):
    sim = simulate_volume((5, 40, 32), (2.5, 0.75, 0.75), seed=2)
    image_path, labels_path = tmp_path / "sim.tif", tmp_path / "sim_labels.tif"
    save_simulated(sim, image_path, labels_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.tif", "sim_labels.tif"]  # no temporaries left
    with tifffile.TiffFile(image_path) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZCYX"
        image = tif.asarray()
        meta, page = tif.imagej_metadata, tif.pages[0]
        assert meta["channels"] == 2 and meta["slices"] == 5
        assert meta["spacing"] == pytest.approx(2.5) and meta["unit"] == "um"
        num, den = page.tags["XResolution"].value
        assert den / num == pytest.approx(0.75)
    assert np.array_equal(np.moveaxis(image, 1, 0), sim.image)
    with tifffile.TiffFile(labels_path) as tif:
        labels = tif.asarray()
        assert tif.imagej_metadata["spacing"] == pytest.approx(2.5)
        num, den = tif.pages[0].tags["YResolution"].value
        assert den / num == pytest.approx(0.75)
    assert labels.dtype == np.uint8 and np.array_equal(labels, sim.labels)


def test_simulator_imports_without_torch():
    # A runtime-only install (no torch) runs the simulator for `tpem-seg demo`.
    code = "import sys, tpem_seg.sim; assert 'torch' not in sys.modules, 'torch was imported'"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_save_without_labels_writes_the_image_only(tmp_path: Path):
    sim = simulate_volume((4, 32, 32), (2.0, 1.0, 1.0), seed=1)
    save_simulated(sim, tmp_path / "image.zarr")
    assert [p.name for p in tmp_path.iterdir()] == ["image.zarr"]
    from tpem_seg.io import read_volume

    volume = read_volume(tmp_path / "image.zarr")
    assert volume.axes == "CZYX" and volume.spacing == pytest.approx((2.0, 1.0, 1.0))
    assert list(volume.channel_names) == ["vessel", "neuron"]
    assert np.array_equal(np.asarray(volume.data), sim.image)
