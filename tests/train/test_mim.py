"""The MIM model and loss: masked voxels only, shapes, learning on a fixed batch, encoder hand-over."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tpem_seg.errors import TpemSegError  # noqa: E402
from tpem_seg.models import create_model, get_config  # noqa: E402
from tpem_seg.models.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from tpem_seg.train.finetune import load_pretrained_encoder  # noqa: E402
from tpem_seg.train.masking import make_masks, upsample_mask  # noqa: E402
from tpem_seg.train.mim import MIMModel, choose_mask_space, masked_l1  # noqa: E402

CONFIG = get_config("unetr-test", in_channels=2)  # 16x32x32 tiles: a 1x2x2 token grid


def batch(rng, strategy="random", mask_patch=(16, 16, 16), ratio=0.5, n=2):
    x = rng.random((n, 2, 16, 32, 32)).astype(np.float32)
    mask = upsample_mask(make_masks(strategy, x, mask_patch, ratio, rng), mask_patch)
    return torch.from_numpy(x), torch.from_numpy(mask)


def test_loss_ignores_unmasked_voxels(rng):
    x, mask = batch(rng)
    pred = torch.rand_like(x, requires_grad=True)
    loss = masked_l1(pred, x, mask)
    loss.backward()
    assert (pred.grad[~mask] == 0).all() and (pred.grad[mask] != 0).any()
    changed = pred.detach().clone()
    changed[~mask] += 100.0  # wild errors where nothing is masked change nothing
    assert torch.isclose(masked_l1(changed, x, mask), loss.detach())
    exact = torch.where(mask, x, torch.full_like(x, 5.0))
    assert masked_l1(exact, x, mask).item() == 0.0


def test_loss_ignores_padding(rng):
    x, mask = batch(rng)
    mask[:] = True
    valid = torch.ones(2, 16, 32, 32, dtype=torch.bool)
    valid[:, :4] = False
    pred = x.clone()
    pred[:, :, :4] += 1.0  # errors only on padding planes
    assert masked_l1(pred, x, mask, valid).item() == 0.0


@pytest.mark.parametrize("space,strategy,mask_patch", [("token", "random", (16, 16, 16)),
                                                       ("input", "channel", (4, 8, 8)),
                                                       ("input", "intensity", (8, 16, 16))])
def test_model_shapes_and_token_mask(rng, space, strategy, mask_patch):
    torch.manual_seed(0)
    model = MIMModel(CONFIG, space)
    x, mask = batch(rng, strategy, mask_patch)
    assert model(x, mask).shape == x.shape
    if space == "token":
        tokens = model.token_mask(mask)
        assert tokens.shape == (2, 4)
        expected = mask[:, 0, 0, ::16, ::16].reshape(2, 4)  # one voxel per token, raster order
        assert torch.equal(tokens, expected)


def test_token_masking_hides_the_masked_content(rng):
    """Token space: what lies under a masked token cannot change the output."""
    torch.manual_seed(0)
    model = MIMModel(CONFIG, "token").eval()
    x, mask = batch(rng, ratio=0.5)
    other = torch.where(mask, torch.rand_like(x), x)
    with torch.no_grad():
        assert torch.allclose(model(x, mask), model(other, mask), atol=1e-6)


def test_choose_mask_space():
    assert choose_mask_space("auto", "random", (16, 16, 16)) == "token"
    assert choose_mask_space("auto", "channel", (16, 16, 16)) == "input"
    assert choose_mask_space("auto", "random", (4, 8, 8)) == "input"
    with pytest.raises(ValueError):
        choose_mask_space("token", "channel", (16, 16, 16))


def test_encoder_keys_are_the_unetrs():
    unetr = create_model(get_config("unetr-test", in_channels=2, out_channels=3))
    mim = MIMModel(CONFIG, "token")
    mim_keys = {k for k in mim.state_dict() if k.startswith("vit.")}
    assert mim_keys == {k for k in unetr.state_dict() if k.startswith("vit.")}


@pytest.mark.parametrize("space", ["token", "input"])
def test_pretraining_drives_the_loss_down_on_a_fixed_batch(rng, space):
    torch.manual_seed(0)
    model = MIMModel(CONFIG, space)
    # structured volumes (smooth blobs) so that the visible part predicts the masked part
    zz, yy, xx = np.meshgrid(np.arange(16), np.arange(32), np.arange(32), indexing="ij")
    x = np.stack([np.stack([np.sin(xx / 5.0 + i) * np.cos(yy / 7.0) * 0.5 + 0.5,
                            np.cos(zz / 4.0 + xx / 9.0 + i) * 0.5 + 0.5]) for i in range(2)]).astype(np.float32)
    mask = upsample_mask(make_masks("channel" if space == "input" else "random", x, (16, 16, 16) if space == "token"
                                    else (8, 8, 8), 0.5, rng), (16, 16, 16) if space == "token" else (8, 8, 8))
    x, mask = torch.from_numpy(x), torch.from_numpy(mask)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = masked_l1(model(x, mask), x, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


def test_finetuning_loads_every_encoder_tensor(tmp_path):
    torch.manual_seed(1)
    mim = MIMModel(CONFIG, "token")
    path = save_checkpoint(tmp_path / "pre.pt", Checkpoint("pretrain", CONFIG, mim.state_dict()))
    torch.manual_seed(2)
    unetr = create_model(get_config("unetr-test", in_channels=2, out_channels=3))
    encoder = {k for k in unetr.state_dict() if k.startswith("vit.")}
    assert load_pretrained_encoder(unetr, path) == len(encoder) > 100
    state = unetr.state_dict()
    for k, v in mim.state_dict().items():
        if k.startswith("vit."):
            assert torch.equal(state[k], v), k


def test_finetuning_refuses_an_encoder_of_another_shape(tmp_path):
    mim = MIMModel(get_config("unetr-test", in_channels=1), "token")
    path = save_checkpoint(tmp_path / "pre.pt", Checkpoint("pretrain", mim.config, mim.state_dict()))
    unetr = create_model(get_config("unetr-test", in_channels=2, out_channels=3))
    with pytest.raises(TpemSegError, match="in_channels 1"):
        load_pretrained_encoder(unetr, path)
