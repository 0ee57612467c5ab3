"""The bundled packages (tpem_seg/zoo/): they load, pass their checksums, segment, and are picked by channel count.

How they were trained and scored: docs/models/vessels-2p.md, docs/models/tpem-2ch.md.
"""

import re

import numpy as np
import pytest

from tpem_seg import write_volume
from tpem_seg.cli import main
from tpem_seg.models import open_package, zoo_packages
from tpem_seg.runtime import Segmenter

BUNDLED = {"vessels-2p": (1, ["background", "vessel"]), "tpem-2ch": (2, ["background", "vessel", "neuron"])}
VERSIONS = {"vessels-2p": "0.3.0", "tpem-2ch": "0.2.0"}
# `tpem-seg demo` (seed 2024, 24x256x256 at 5x1x1 µm, never seen in training) measured vessel Dice 0.947 and
# neuron Dice 0.820 with the bundled tpem-2ch on ONNX Runtime; chance (labels drawn at random at the class
# fractions, ~4% vessel and ~1% neuron) would score about 0.04 and 0.01.
DEMO_VESSEL_DICE_MIN = 0.8
DEMO_NEURON_DICE_MIN = 0.6


def run_cli(*args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def test_both_packages_are_bundled():
    assert set(BUNDLED) <= set(zoo_packages())


@pytest.mark.parametrize("name", list(BUNDLED))
def test_package_loads_verifies_and_segments(name):
    in_channels, classes = BUNDLED[name]
    package = open_package(name)  # verifies the manifest digest and every file's sha256
    manifest = package.manifest
    assert manifest.name == name and manifest.version == VERSIONS[name]
    assert manifest.config.in_channels == in_channels and list(manifest.classes) == classes
    assert sum(p.stat().st_size for p in package.path.rglob("*") if p.is_file()) <= 25 * 2**20
    data = np.random.default_rng(0).random((in_channels, 16, 64, 64), np.float32) * 200
    with Segmenter(package, backend="onnxruntime", device="cpu") as segmenter:
        labels = segmenter.segment(data, axes="CZYX", spacing=manifest.spacing)
    assert labels.shape == (16, 64, 64) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(len(classes)))


@pytest.mark.parametrize("name", list(BUNDLED))
def test_run_without_model_picks_by_channel_count(name, tmp_path, capsys):
    in_channels, classes = BUNDLED[name]
    src = tmp_path / "in.tif"
    write_volume(src, np.random.default_rng(1).random((in_channels, 16, 64, 64), np.float32), "CZYX",
                 spacing=(5.0, 1.0, 1.0))
    assert run_cli("run", src, "-o", tmp_path / "out.tif", "--backend", "onnxruntime", "--no-progress") == 0
    from tpem_seg.cli.segment import default_model_for

    assert default_model_for(src, None, None) == name


def test_demo_scores_above_chance(tmp_path, capsys):
    assert run_cli("demo", "-o", tmp_path / "demo", "--backend", "onnxruntime") in (0, None)
    out = capsys.readouterr().out
    vessel = float(re.search(r"vessel (\d\.\d+)", out).group(1))
    neuron = float(re.search(r"neuron (\d\.\d+)", out).group(1))
    assert vessel > DEMO_VESSEL_DICE_MIN and neuron > DEMO_NEURON_DICE_MIN, out


def test_vessels_2p_runs_monte_carlo_dropout():
    """vessels-2p 0.3.0 was trained with dropout and ships its dropout graph: --uncertainty uses it."""
    package = open_package("vessels-2p")
    assert package.manifest.config.dropout_rate > 0 and package.mc_dropout_path is not None
    data = np.random.default_rng(2).random((16, 64, 64), np.float32) * 200
    with Segmenter(package, backend="onnxruntime", device="cpu", mc_passes=3) as segmenter:
        labels, uncertainty = segmenter.segment(data, spacing=package.manifest.spacing, uncertainty=True)
        assert segmenter.last_summary.extra["uncertainty"]["method"] == "mc-dropout"
    assert uncertainty.shape == labels.shape and uncertainty.dtype == np.float32
