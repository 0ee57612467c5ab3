import numpy as np
import pytest

from tpem_seg import Segmenter, read_volume, write_volume
from tpem_seg.errors import InputError
from tpem_seg.io import Volume
from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend
from tpem_seg.runtime.engine import RunState, TileEngine
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.runtime.pipeline import make_plan
from tpem_seg.runtime.settings import TileOptions
from tpem_seg.runtime.resample import needs_resampling, resampled_shape


def test_segment_array_and_file_agree(package_2ch, tmp_path):
    volume = np.random.default_rng(1).integers(0, 4000, (2, 20, 40, 70), dtype=np.uint16)
    write_volume(tmp_path / "in.tif", volume, "CZYX", spacing=(2.0, 0.5, 0.5))
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu") as seg:
        labels = seg.segment(volume, axes="CZYX")
        summary = seg.segment_file(tmp_path / "in.tif", tmp_path / "out.tif")
    out = read_volume(tmp_path / "out.tif")
    assert labels.dtype == np.uint8 and labels.shape == (20, 40, 70)
    np.testing.assert_array_equal(np.asarray(out.data), labels)
    assert out.spacing == pytest.approx((2.0, 0.5, 0.5))
    assert summary.tiles > 1 and summary.voxels == 20 * 40 * 70


def test_probabilities_are_float16_class_first_and_sum_to_one(package_2ch, tmp_path):
    volume = np.random.default_rng(2).random((2, 16, 32, 40), dtype=np.float32)
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output="probabilities") as seg:
        probs = seg.segment(volume, axes="CZYX")
        seg.segment_file(_npy(tmp_path, volume), tmp_path / "p.zarr", axes="CZYX")
    assert probs.dtype == np.float16 and probs.shape == (3, 16, 32, 40)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=3e-3)
    written = read_volume(tmp_path / "p.zarr")
    assert written.n_channels == 3
    np.testing.assert_array_equal(written.read_czyx(), probs)


def test_streaming_emits_slabs_in_order_with_bounded_window(package_2ch):
    volume = np.random.default_rng(3).random((2, 70, 32, 32), dtype=np.float32)
    slabs = []
    manifest = package_2ch.manifest
    backend = OnnxRuntimeBackend(package_2ch, device="cpu")
    backend.load()
    engine = TileEngine(backend.infer, manifest.tile, 3, manifest.activation, TileOptions(), batch_size=2)
    source = Volume(volume, "CZYX")
    plan = make_plan(source.shape_zyx, manifest.tile, 0.25)
    state = RunState()
    engine.run(source, plan, fit_normalizer(source, manifest.normalization), None, "logits",
               lambda first, block: slabs.append((first, block.shape[1])), state)
    backend.close()
    assert [first for first, _ in slabs] == list(np.cumsum([0] + [d for _, d in slabs[:-1]]))
    assert sum(d for _, d in slabs) == 70 and state.tiles == plan.n_tiles
    assert len(slabs) > 3 and max(d for _, d in slabs) <= manifest.tile[0]


def test_tta_is_flip_invariant(package_2ch):
    volume = np.random.default_rng(4).random((2, 16, 32, 32), dtype=np.float32)
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output="logits", tta=True) as seg:
        a = seg.segment(volume, axes="CZYX")
        b = seg.segment(np.ascontiguousarray(volume[:, :, :, ::-1]), axes="CZYX")
    np.testing.assert_allclose(a[..., ::-1], b, atol=1e-4)


def test_resamples_to_model_voxel_size_and_back(package_1ch):
    volume = np.random.default_rng(5).integers(0, 255, (12, 48, 48), dtype=np.uint8)
    with Segmenter(package_1ch, backend="onnxruntime", device="cpu") as seg:
        labels = seg.segment(volume, spacing=(5.0, 2.0, 2.0))
        assert seg.last_summary.resampled
        plain = seg.segment(volume, spacing=(5.0, 1.02, 1.02))
        assert not seg.last_summary.resampled
    assert labels.shape == plain.shape == volume.shape


def test_resampling_rules():
    assert not needs_resampling(None, (5, 1, 1))
    assert not needs_resampling((5, 1.02, 1.02), (5, 1, 1))
    assert needs_resampling((5, 0.62, 0.62), (5, 1, 1))
    assert resampled_shape((10, 512, 512), (5, 0.5, 0.5), (5, 1, 1)) == (10, 256, 256)


@pytest.mark.parametrize("channels,match", [(None, "--channels"), ([0, 5], "names channel"), ([0], "picks 1")])
def test_channel_errors(package_2ch, channels, match):
    volume = np.zeros((3, 16, 32, 32), np.float32)
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", channels=channels) as seg:
        with pytest.raises(InputError, match=match):
            seg.segment(volume, axes="CZYX")


def test_channel_selection_reorders(package_2ch):
    rng = np.random.default_rng(6)
    volume = rng.random((3, 16, 32, 32), dtype=np.float32)
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", channels=[2, 0], output="logits") as seg:
        picked = seg.segment(volume, axes="CZYX")
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu", output="logits") as seg:
        direct = seg.segment(volume[[2, 0]], axes="CZYX")
    np.testing.assert_allclose(picked, direct, atol=1e-6)


def test_nan_and_empty_volumes_are_user_errors(package_2ch):
    volume = np.ones((2, 16, 32, 32), np.float32)
    volume[1, 3, 4, 5] = np.nan
    with Segmenter(package_2ch, backend="onnxruntime", device="cpu") as seg:
        with pytest.raises(InputError, match="NaN"):
            seg.segment(volume, axes="CZYX")
        with pytest.raises(InputError, match="empty"):
            seg.segment(np.zeros((2, 0, 32, 32), np.float32), axes="CZYX")


def _npy(tmp_path, array):
    path = tmp_path / "in.npy"
    np.save(path, array)
    return path
