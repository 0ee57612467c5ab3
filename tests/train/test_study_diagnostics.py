"""The study's diagnostics: the trivial predictor and the zeroed ViT, against direct computations."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tpem_seg.models.registry import create_model  # noqa: E402
from tpem_seg.train.study.diagnostics import visible_mean, vit_zeroed  # noqa: E402


def test_visible_mean_is_the_mean_of_the_visible_valid_voxels(rng):
    x = torch.from_numpy(rng.random((2, 2, 4, 6, 6)).astype(np.float32))
    mask = torch.from_numpy(rng.random((2, 2, 4, 6, 6)) < 0.7)
    valid = torch.ones(2, 4, 6, 6, dtype=torch.bool)
    valid[1, :, :, :2] = False
    out = visible_mean(x, mask, valid)
    for n in range(2):
        for c in range(2):
            seen = ~mask[n, c].numpy() & valid[n].numpy()
            assert out[n, c].numpy() == pytest.approx(np.full((4, 6, 6), x[n, c].numpy()[seen].mean()), rel=1e-5)


def test_vit_zeroed_leaves_only_the_convolutional_path(rng):
    model = create_model("unetr-test", in_channels=1, out_channels=2).eval()
    x = torch.from_numpy(rng.random((1, 1, 16, 32, 32)).astype(np.float32))
    with torch.no_grad():
        trained = model(x)
        with vit_zeroed(model):
            zeroed = model(x)
            for p in model.vit.parameters():  # the ViT's weights no longer matter
                p.add_(1.0)
            zeroed_again = model(x)
        restored = model(x)  # the hook is gone: the changed ViT changes the output
    assert torch.equal(zeroed, zeroed_again) and not torch.allclose(trained, zeroed)
    assert not torch.allclose(restored, trained)
