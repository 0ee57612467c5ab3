"""Plain MONAI UNETR state dicts (as labs hold them, e.g. NOVAS3D's) exported with their arguments as flags."""

from __future__ import annotations

import pytest

from tpem_seg.errors import TpemSegError

torch = pytest.importorskip("torch")
monai_nets = pytest.importorskip("monai.networks.nets")

#: NOVAS3D: 2 channels (vessel, neuron) -> 3 classes, ViT-B, perceptron patch embedding, residual blocks,
#: instance norm, intensities 0..1024 mapped to [0, 1].
NOVAS3D = dict(in_channels=2, out_channels=3, feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12,
               proj_type="perceptron", norm_name="instance", res_block=True)
NOVAS3D_FLAGS = ["--arch", "unetr", "--in-channels", "2", "--classes", "3", "--proj-type", "perceptron",
                 "--norm-name", "instance", "--res-block", "--normalization", "range", "--intensity-range", "0,1024",
                 "--channel-names", "vessel,neuron", "--class-names", "background,vessel,neuron",
                 "--spacing", "5,0.99,0.99"]


def save_monai_state_dict(path, tile, seed=1, prefix="module.", **arguments):
    """A MONAI UNETR's state dict saved as DataParallel leaves it (``module.`` prefix)."""
    torch.manual_seed(seed)
    model = monai_nets.UNETR(img_size=tile, **arguments)
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    return path


def check_novas3d_package(path, tile):
    from tpem_seg.models import open_package

    m = open_package(path).manifest
    assert m.config.tile == tile and m.config.proj_type == "perceptron" and m.config.hidden_size == 768
    assert (m.config.in_channels, m.config.out_channels, m.config.res_block) == (2, 3, True)
    assert m.normalization.mode == "range" and m.normalization.range == (0.0, 1024.0) and m.normalization.clip
    assert m.channels == ["vessel", "neuron"] and m.spacing == (5.0, 0.99, 0.99)
    assert m.parity["onnxruntime_vs_torch"]["passed"]
    assert m.provenance["source"]["kind"] == "state dict"
    return m


def test_novas3d_state_dict_exports_with_parity(tmp_path, cli):
    """The NOVAS3D configuration at 32^3 tiles (ViT-B sizes kept), weights left out of the package."""
    ckpt = save_monai_state_dict(tmp_path / "novas3d.pth", (32, 32, 32), **NOVAS3D)
    out = tmp_path / "novas3d.tpem"
    result = cli(["export", str(ckpt), "-o", str(out), *NOVAS3D_FLAGS, "--tile", "32,32,32", "--no-weights",
                  "--parity-tiles", "1"])
    assert result.exit_code == 0, result.stderr
    m = check_novas3d_package(out, (32, 32, 32))
    assert m.weights_file is None and not (out / "model.pt").exists()
    assert "--proj-type perceptron" in m.provenance["command"] and "--no-weights" in m.provenance["command"]


@pytest.mark.slow
def test_novas3d_state_dict_at_128_cubed(tmp_path, cli):
    """The real NOVAS3D tile (128^3): export and parity on the CPU (about a minute on 2 cores)."""
    ckpt = save_monai_state_dict(tmp_path / "novas3d.pth", (128, 128, 128), **NOVAS3D)
    out = tmp_path / "novas3d128.tpem"
    result = cli(["export", str(ckpt), "-o", str(out), *NOVAS3D_FLAGS, "--tile", "128,128,128",
                  "--parity-tiles", "1"])
    assert result.exit_code == 0, result.stderr
    check_novas3d_package(out, (128, 128, 128))


SMALL = dict(in_channels=2, out_channels=3, feature_size=4, hidden_size=32, mlp_dim=64, num_heads=2)
SMALL_FLAGS = ["--arch", "unetr", "--in-channels", "2", "--classes", "3", "--tile", "16,32,32", "--feature-size",
               "4", "--hidden-size", "32", "--mlp-dim", "64", "--num-heads", "2"]


def test_wrong_arguments_name_the_mismatch(tmp_path, cli):
    ckpt = save_monai_state_dict(tmp_path / "small.pth", (16, 32, 32), proj_type="perceptron", **SMALL)
    result = cli(["export", str(ckpt), "-o", str(tmp_path / "x.tpem"), *SMALL_FLAGS])  # proj_type left at conv
    assert result.exit_code == 2
    assert "do not fit UNETR" in result.stderr and "--proj-type" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_state_dict_without_arch_says_what_to_add(tmp_path, cli):
    ckpt = save_monai_state_dict(tmp_path / "small.pth", (16, 32, 32), **SMALL)
    result = cli(["export", str(ckpt), "-o", str(tmp_path / "x.tpem")])
    assert result.exit_code == 2 and "--arch unetr --in-channels" in result.stderr
    result = cli(["export", str(ckpt), "-o", str(tmp_path / "x.tpem"), "--arch", "unetr"])
    assert result.exit_code == 2 and "add --in-channels --classes --tile" in result.stderr


def test_wrapped_and_compiled_prefixes_are_stripped():
    from tpem_seg.models.checkpoint import clean_state_dict

    weights = torch.zeros(1)
    assert clean_state_dict({"state_dict": {"module.vit.a": weights}}) == {"vit.a": weights}
    assert clean_state_dict({"module._orig_mod.out.b": weights}) == {"out.b": weights}
    assert clean_state_dict({"vit.c": weights}) == {"vit.c": weights}


def test_registry_config_as_arch_base(tmp_path):
    """``--arch unetr-test`` takes that config's sizes; the required arguments override it."""
    from tpem_seg.export.checkpoints import ArchOptions, model_from_source, source_from_checkpoint
    from tpem_seg.models import create_model, get_config

    torch.manual_seed(0)
    torch.save(create_model(get_config("unetr-test", out_channels=2)).state_dict(), tmp_path / "w.pt")
    arch = ArchOptions("unetr-test", in_channels=2, classes=2, tile=(16, 32, 32))
    source = source_from_checkpoint(tmp_path / "w.pt", arch)
    assert source.config == get_config("unetr-test", out_channels=2) and source.kind == "state dict"
    assert not model_from_source(source).training
    with pytest.raises(TpemSegError, match="unknown; use unetr or one of"):
        source_from_checkpoint(tmp_path / "w.pt", ArchOptions("unetr-xl", 2, 2, (16, 32, 32)))
    with pytest.raises(TpemSegError, match="multiples of 16"):
        source_from_checkpoint(tmp_path / "w.pt", ArchOptions("unetr", 2, 2, (20, 32, 32)))
