"""Parity building blocks: tiles, the comparison, and the refusal."""

from __future__ import annotations

import numpy as np
import pytest

from tpem_seg.errors import TpemSegError
from tpem_seg.export.parity import (ParityReport, ParityTiles, backend_parity, check_parity, parity_tiles,
                                    random_tiles, tile_origins, tiles_from_volume)
from tpem_seg.io import Volume, write_volume
from tpem_seg.models import Manifest, NormalizationSpec, get_config


def manifest(**kw) -> Manifest:
    return Manifest(name="t", config=get_config("unetr-test"), channels=["a", "b"], classes=["x", "y", "z"], **kw)


def test_check_parity_refuses_with_numbers():
    report = ParityReport("torch", "onnxruntime", 4, {"random": 4}, 2e-3, 1e-5, 1e-2, 0.999, tolerance=1e-4,
                          passed=False)
    with pytest.raises(TpemSegError, match=r"up to 2.00e-03 in probability \(tolerance 0.0001, 4 tiles\)"):
        check_parity(report, "the export")
    report.passed = True
    assert check_parity(report, "the export") is report


def test_tiles_cover_the_volume_diagonal():
    assert tile_origins((32, 64, 64), (16, 32, 32), 2) == [(0, 0, 0), (16, 32, 32)]
    assert tile_origins((16, 32, 32), (16, 32, 32), 1) == [(0, 0, 0)]
    with pytest.raises(TpemSegError, match="smaller than a tile"):
        tile_origins((8, 64, 64), (16, 32, 32), 1)


def test_parity_tiles_random_plus_synthetic_are_normalised():
    tiles = parity_tiles(manifest(), n_random=2, n_real=3)
    assert tiles.tiles.shape == (5, 2, 16, 32, 32) and tiles.tiles.dtype == np.float32
    assert tiles.sources == {"random": 2, "synthetic": 3}
    assert 0.0 <= tiles.tiles.min() and tiles.tiles.max() <= 1.0  # percentile normalisation clips


def test_parity_tiles_from_a_user_volume(tmp_path):
    data = (np.random.default_rng(0).random((2, 20, 40, 40)) * 4000).astype(np.uint16)
    path = write_volume(tmp_path / "v.tif", data, axes="CZYX")
    tiles = parity_tiles(manifest(normalization=NormalizationSpec("range", range=(0, 4000))), 0, 2, path)
    assert tiles.sources == {"volume": 2} and tiles.tiles.shape == (2, 2, 16, 32, 32)
    np.testing.assert_allclose(tiles.tiles[0], data[:, :16, :32, :32] / 4000.0, atol=1e-6)
    with pytest.raises(TpemSegError, match="has 1 channel"):
        parity_tiles(manifest(), 0, 1, write_volume(tmp_path / "one.tif", data[0], axes="ZYX"))


def test_tiles_from_volume_normalise_over_the_whole_volume():
    """Percentiles come from the whole volume, not per tile (per-tile statistics make seams)."""
    data = np.zeros((1, 16, 64, 64), np.float32)
    data[..., 32:] = 1000.0  # the second tile is all bright, the first all dark
    tiles = tiles_from_volume(Volume(data, "CZYX"), (16, 32, 32), 2, NormalizationSpec())
    assert tiles[0].max() == 0.0 and tiles[1].min() == 1.0


def test_random_tiles_are_reproducible():
    np.testing.assert_array_equal(random_tiles(2, 1, (16, 16, 16), 5), random_tiles(2, 1, (16, 16, 16), 5))
    assert isinstance(ParityTiles(random_tiles(1, 1, (16, 16, 16)), {"random": 1}).tiles, np.ndarray)


def test_backend_parity_of_onnxruntime_against_torch(package_2ch):
    """The export's own check, through the runtime's backends: fp32 ONNX Runtime matches PyTorch."""
    pytest.importorskip("torch")
    from tpem_seg.runtime.backends import BackendSpec

    tiles = parity_tiles(package_2ch.manifest, n_random=1, n_real=1)
    report = backend_parity(package_2ch, BackendSpec("torch", "cpu"), BackendSpec("onnxruntime", "cpu"), tiles,
                            tolerance=1e-4)
    assert report.passed and report.n_tiles == 2 and report.label_agreement > 0.999
    assert report.reference.startswith("torch") and report.candidate.startswith("onnxruntime")
