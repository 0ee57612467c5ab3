"""Training's sliding-window prediction (tpem_seg.train.infer) against MONAI's sliding_window_inference."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
inferers = pytest.importorskip("monai.inferers", reason="MONAI is the oracle")

from tpem_seg.io import Volume  # noqa: E402
from tpem_seg.runtime.normalize import Normalizer  # noqa: E402
from tpem_seg.train.infer import predict_labels, predict_logits  # noqa: E402


def test_predict_matches_monai_and_labels_follow_the_runtime_head():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1))
    volume = np.random.default_rng(5).random((2, 20, 30, 41), dtype=np.float32)
    identity = Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32), clip=False)
    tile = (8, 16, 16)
    logits = predict_logits(model, Volume(volume, "CZYX"), identity, tile, 3, batch_size=3)
    with torch.inference_mode():
        expected = inferers.sliding_window_inference(
            torch.from_numpy(volume[None]), roi_size=tile, sw_batch_size=3, predictor=model.eval(),
            overlap=0.25, mode="gaussian", sigma_scale=0.125)[0].numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    labels = predict_labels(model, Volume(volume, "CZYX"), identity, tile, 3, batch_size=3)
    clear = np.sort(logits, axis=0)[-1] - np.sort(logits, axis=0)[-2] > 1e-5
    np.testing.assert_array_equal(labels[clear], logits.argmax(0)[clear])
