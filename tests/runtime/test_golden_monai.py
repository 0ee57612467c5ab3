"""Golden test: tpem-seg's tiling and blending reproduce MONAI's sliding_window_inference."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
inferers = pytest.importorskip("monai.inferers", reason="MONAI is the oracle")

from tpem_seg import Segmenter  # noqa: E402


def monai_probabilities(model, volume: np.ndarray, tile, overlap=0.25) -> np.ndarray:
    with torch.inference_mode():
        logits = inferers.sliding_window_inference(
            torch.from_numpy(volume[None]), roi_size=tile, sw_batch_size=3, predictor=model.eval(),
            overlap=overlap, mode="gaussian", sigma_scale=0.125)
    return torch.softmax(logits, dim=1)[0].numpy()


def ours_probabilities(package, volume: np.ndarray) -> np.ndarray:
    with Segmenter(package, backend="torch", device="cpu", output="logits", overlap=0.25) as seg:
        logits = seg.segment(volume, axes="CZYX")
    return torch.softmax(torch.from_numpy(logits), dim=0).numpy()


@pytest.mark.parametrize("shape", [(2, 37, 45, 70), (2, 10, 50, 33)], ids=["not-multiple-of-tile", "thinner-than-tile"])
def test_matches_monai_sliding_window(package_identity, shape):
    package, model = package_identity
    volume = np.random.default_rng(3).random(shape, dtype=np.float32)
    expected = monai_probabilities(model, volume, package.manifest.tile)
    got = ours_probabilities(package, volume)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4


def test_blocks_match_monai_sliding_window(package_identity):
    """Blocks change nothing the oracle can see (they equal one pass bit for bit)."""
    package, model = package_identity
    volume = np.random.default_rng(4).random((2, 37, 45, 70), dtype=np.float32)
    expected = monai_probabilities(model, volume, package.manifest.tile)
    with Segmenter(package, backend="torch", device="cpu", output="logits", block=(12, 24, 40)) as seg:
        logits = seg.segment(volume, axes="CZYX")
        assert seg.last_summary.extra["blocks"] == 4 * 2 * 2
    got = torch.softmax(torch.from_numpy(logits), dim=0).numpy()
    assert np.abs(got - expected).max() < 1e-4
