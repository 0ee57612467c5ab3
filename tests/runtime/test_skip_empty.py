"""Skipping empty tiles: the rule, the background they get, and that nothing else changes."""

import numpy as np
import pytest

from tpem_seg import Segmenter
from tpem_seg.errors import InputError
from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend
from tpem_seg.runtime.loop import background_logits
from tpem_seg.runtime.pipeline import empty_tiles
from tpem_seg.runtime.stitch import Stitcher
from tpem_seg.runtime.tiling import gaussian_weights


def test_rule_is_the_99th_percentile_below_the_threshold(rng):
    tiles = np.zeros((4, 2, 8, 10, 10), dtype=np.float32)  # 800 voxels per channel
    tiles[1, 0].flat[:12] = 0.5  # 1.5% bright in one channel: foreground
    tiles[2, 1].flat[:6] = 0.5  # 0.75% bright: below the 99th percentile, still empty
    tiles[3] = rng.random((2, 8, 10, 10)) * 0.09  # dim everywhere
    got = empty_tiles(tiles, 0.1)
    np.testing.assert_array_equal(got, [True, False, True, True])
    p99 = np.percentile(tiles.reshape(4, 2, -1), 99, axis=2).max(axis=1)
    np.testing.assert_array_equal(got, p99 < 0.1)


def test_add_constant_equals_adding_constant_logits(rng):
    weights = gaussian_weights((4, 6, 6))
    a, b = Stitcher(3, (8, 12, 12), (4, 6, 6), weights), Stitcher(3, (8, 12, 12), (4, 6, 6), weights)
    values = np.array([10.0, 0.0, -1.5], np.float32)
    a.add(np.broadcast_to(values[None, :, None, None, None], (1, 3, 4, 6, 6)).copy(), [(0, 3, 6)])
    b.add_constant(values, [(0, 3, 6)])
    np.testing.assert_allclose(a.advance_raw(4)[1], b.advance_raw(4)[1], rtol=1e-6)


class CountingBackend(OnnxRuntimeBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tiles_seen = 0

    def _infer(self, batch):
        self.tiles_seen += len(batch)
        return super()._infer(batch)


def _volume_with_a_bright_corner(rng):
    volume = np.full((2, 16, 64, 96), 100, dtype=np.uint16)
    volume[:, :, :28, :28] = rng.integers(100, 4000, (2, 16, 28, 28))
    volume[:, :, 60:, 90:] = rng.integers(0, 50, (2, 16, 4, 6))  # dark speck: sets the low percentile
    return volume


def test_empty_tiles_skip_the_network_and_become_background(package_2ch, rng):
    volume = _volume_with_a_bright_corner(rng)
    backend = CountingBackend(package_2ch)
    with Segmenter(package_2ch, backend=backend, output="probabilities", skip_empty=True) as seg:
        probs = seg.segment(volume, axes="CZYX")
        summary = seg.last_summary
    skipped = summary.extra["skipped_tiles"]
    assert 0 < skipped < summary.tiles
    assert backend.tiles_seen == summary.tiles - skipped
    assert "empty, skipped" in summary.line()
    # Far from the bright corner only skipped tiles contribute: background, with certainty.
    far = probs[:, :, 40:, 60:].astype(np.float32)
    assert (far[0] > 0.999).all()


def test_without_empty_tiles_the_result_is_unchanged(package_2ch, rng):
    volume = rng.integers(500, 4000, (2, 16, 40, 50), dtype=np.uint16)
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output="logits") as full:
        expected = full.segment(volume, axes="CZYX")
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output="logits", skip_empty=True) as seg:
        got = seg.segment(volume, axes="CZYX")
        assert seg.last_summary.extra["skipped_tiles"] == 0
    np.testing.assert_array_equal(got, expected)


def test_sigmoid_packages_get_negative_logits_everywhere(package_2ch):
    from dataclasses import replace

    from tpem_seg.models.package import ModelPackage

    sigmoid = ModelPackage(package_2ch.path, replace(package_2ch.manifest, activation="sigmoid"))
    with Segmenter(sigmoid, backend="onnxruntime", device="cpu", output="labels", skip_empty=True) as seg:
        labels = seg.segment(np.zeros((2, 16, 32, 32), np.uint16), axes="CZYX")
    assert (labels == 0).all()
    assert background_logits(3, "sigmoid") == [-10.0, -10.0, -10.0]
    assert background_logits(3, "softmax") == [10.0, 0.0, 0.0]


def test_skip_empty_needs_an_intensity_scale_and_a_sane_threshold(package_identity, package_2ch):
    package, _ = package_identity
    with pytest.raises(InputError, match="normalisation"):
        Segmenter(package, backend="onnxruntime", device="cpu", skip_empty=True)
    with pytest.raises(InputError, match="empty_threshold"):
        Segmenter(package_2ch, backend="onnxruntime", device="cpu", skip_empty=True, empty_threshold=1.5)


def test_cli_run_skip_empty(package_2ch, tmp_path, rng, capsys):
    from tpem_seg import read_volume, write_volume
    from tpem_seg.cli import main

    write_volume(tmp_path / "in.tif", _volume_with_a_bright_corner(rng), "CZYX")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "in.tif"), "-o", str(tmp_path / "out.tif"), "--model", str(package_2ch.path),
              "--backend", "onnxruntime", "--device", "cpu", "--skip-empty", "--no-progress"])
    assert exit_info.value.code in (0, None)
    assert "empty, skipped" in capsys.readouterr().err
    assert read_volume(tmp_path / "out.tif").shape_zyx == (16, 64, 96)
