"""Uncertainty maps: Monte-Carlo dropout passes (ONNX Runtime and PyTorch), the flip fallback, the map's
shape, type, voxel size and metadata, and that the labels stay those of a plain run."""

from __future__ import annotations

import numpy as np
import pytest

from tpem_seg import Segmenter, read_volume, write_volume
from tpem_seg.errors import InputError
from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend
from tpem_seg.runtime.backends.torch_backend import TorchBackend

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def dropout_package(tmp_path_factory):
    """unetr-test, 1 channel -> background/vessel, ViT dropout 0.3: what Monte-Carlo dropout runs on."""
    from tpem_seg.export.package import package_from_model
    from tpem_seg.models import Manifest, create_model, get_config

    torch.manual_seed(3)
    config = get_config("unetr-test", in_channels=1, out_channels=2, dropout_rate=0.3)
    manifest = Manifest(name="mc", config=config, channels=["vessel"], classes=["background", "vessel"],
                        spacing=(5.0, 1.0, 1.0))
    package = package_from_model(create_model(config), manifest, tmp_path_factory.mktemp("pkg") / "mc.tpem")
    return package


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = np.random.default_rng(5).integers(0, 255, (20, 40, 48), dtype=np.uint8)
    path = tmp_path_factory.mktemp("in") / "stack.tif"
    write_volume(path, data, "ZYX", spacing=(5.0, 1.0, 1.0))
    return path, data


def _tiles(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 16, 32, 32), dtype=np.float32)


@pytest.mark.parametrize("backend_cls", [OnnxRuntimeBackend, TorchBackend], ids=["onnxruntime", "torch"])
def test_mc_passes_differ_and_repeat_from_the_seed(dropout_package, backend_cls, one_torch_thread):
    tiles = _tiles()
    with backend_cls(dropout_package, device="cpu") as backend:
        assert backend.supports_mc_dropout
        backend.start_mc()
        first, second = backend.infer_mc(tiles), backend.infer_mc(tiles)
        backend.start_mc()
        again = backend.infer_mc(tiles), backend.infer_mc(tiles)
        plain = backend.infer(tiles)
    assert np.abs(first - second).max() > 1e-2  # dropout is active: every pass draws new masks
    np.testing.assert_array_equal(first, again[0])
    np.testing.assert_array_equal(second, again[1])
    assert np.abs(first - plain).max() > 1e-2


def test_no_mc_for_a_package_without_dropout(package_1ch):
    with OnnxRuntimeBackend(package_1ch, device="cpu") as backend:
        assert not backend.supports_mc_dropout
        with pytest.raises(NotImplementedError):
            backend.infer_mc(_tiles())


def test_dropout_graph_without_dropout_is_the_network(dropout_package):
    """ONNX Runtime's default optimisations drop the Dropout nodes: what is left equals PyTorch in eval mode."""
    from tpem_seg.export.parity import dropout_graph_parity, random_tiles
    from tpem_seg.export.parity import ParityTiles

    tiles = ParityTiles(random_tiles(3, 1, dropout_package.manifest.tile, seed=1), {"random": 3})
    report = dropout_graph_parity(dropout_package, tiles)
    assert report.passed and report.max_abs_prob_diff < 1e-4


def test_map_shape_type_spacing_and_metadata(dropout_package, stack, tmp_path):
    import tifffile

    path, data = stack
    with Segmenter(dropout_package, backend="onnxruntime", device="cpu", mc_passes=4) as seg:
        summary = seg.segment_file(path, tmp_path / "labels.tif", uncertainty=tmp_path / "u.tif")
        plain = seg.segment(data, spacing=(5.0, 1.0, 1.0))
    spread = read_volume(tmp_path / "u.tif")
    values = np.asarray(spread.data)
    assert values.shape == data.shape and values.dtype == np.float32
    assert spread.spacing == pytest.approx((5.0, 1.0, 1.0))
    assert 0.0 <= values.min() and values.max() <= 1.0 and values.std() > 0
    assert summary.extra["uncertainty"]["method"] == "mc-dropout" and summary.extra["uncertainty"]["passes"] == 4
    assert "mc-dropout (4 passes)" in summary.line()
    properties = tifffile.TiffFile(tmp_path / "u.tif").imagej_metadata["Properties"]
    assert properties["tpem_seg_uncertainty_method"] == "mc-dropout"
    assert properties["tpem_seg_uncertainty_passes"] == "4"
    # the uncertainty passes leave the labels those of a plain run
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "labels.tif").data), plain)


def test_runs_repeat(dropout_package, stack):
    _, data = stack
    with Segmenter(dropout_package, backend="onnxruntime", device="cpu", mc_passes=3) as seg:
        _, first = seg.segment(data, uncertainty=True)
        _, second = seg.segment(data, uncertainty=True)
    np.testing.assert_array_equal(first, second)


def test_onnx_and_torch_mc_maps_agree(dropout_package, stack, one_torch_thread):
    """The draws differ between runtimes, so the maps agree only as estimates of the same quantity."""
    _, data = stack
    maps = {}
    for name in ("onnxruntime", "torch"):
        with Segmenter(dropout_package, backend=name, device="cpu", mc_passes=20) as seg:
            maps[name] = seg.segment(data, spacing=(5.0, 1.0, 1.0), uncertainty=True)[1]
    a, b = maps["onnxruntime"], maps["torch"]
    assert np.abs(a - b).mean() < 0.1 * a.mean()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_flip_fallback_matches_an_oracle(package_identity):
    """No dropout: entropy of the mean softmax over the 8 flips, by scipy, of the torch network itself."""
    from scipy.stats import entropy

    package, model = package_identity
    volume = np.random.default_rng(7).random((2, 16, 32, 32), dtype=np.float32)  # exactly one tile
    with Segmenter(package, backend="onnxruntime", device="cpu") as seg:
        labels, spread = seg.segment(volume, axes="CZYX", uncertainty=True)
        summary = seg.last_summary
    assert summary.extra["uncertainty"]["method"] == "flips" and summary.extra["uncertainty"]["passes"] == 8
    assert "without dropout" in summary.extra["uncertainty"]["reason"]
    x = torch.from_numpy(volume[None])
    flips = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    with torch.no_grad():
        probs = [torch.softmax(model.eval()(x.flip(f) if f else x), 1).flip(f) if f
                 else torch.softmax(model(x), 1) for f in flips]
        mean = torch.stack(probs).mean(0)[0].numpy()
    expected = entropy(mean, axis=0) / np.log(3)
    np.testing.assert_allclose(spread, expected, atol=2e-4)


def test_uncertainty_refuses_resampling_and_explicit_blocks(dropout_package, stack):
    _, data = stack
    with Segmenter(dropout_package, backend="onnxruntime", device="cpu", mc_passes=2) as seg:
        with pytest.raises(InputError, match="voxel size"):
            seg.segment(data, spacing=(5.0, 0.5, 0.5), uncertainty=True)
    with Segmenter(dropout_package, backend="onnxruntime", device="cpu", block=(8, 32, 32)) as seg:
        with pytest.raises(InputError, match="z-slabs"):
            seg.segment(data, uncertainty=True)


@pytest.mark.parametrize("passes", [0, -3])
def test_mc_passes_must_be_positive(dropout_package, passes):
    with pytest.raises(InputError, match="mc-passes"):
        Segmenter(dropout_package, backend="onnxruntime", device="cpu", mc_passes=passes)
