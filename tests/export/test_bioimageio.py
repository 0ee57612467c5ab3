"""bioimage.io export and import: bioimageio.core's own test is the oracle, with a negative control."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.spec", reason="bioimage.io support needs pip install 'tpem-seg[bioimageio]'")
core = pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed")

from bioimageio.spec.model.v0_5 import (  # noqa: E402  (after the skip)
    ClipDescr, ClipKwargs, ScaleLinearDescr, ScaleLinearKwargs, ScaleRangeDescr, ScaleRangeKwargs, SigmoidDescr,
    SoftmaxDescr, SoftmaxKwargs, ZeroMeanUnitVarianceDescr,
)
from bioimageio.spec.utils import read_yaml, write_yaml  # noqa: E402

from tpem_seg.errors import TpemSegError  # noqa: E402
from tpem_seg.export.bioimageio import BioimageioExportOptions, export_bioimageio, preprocessing_steps  # noqa: E402
from tpem_seg.export.bioimageio_import import (  # noqa: E402
    activation_from_steps, import_bioimageio, normalization_from_steps,
)
from tpem_seg.io import read_volume  # noqa: E402
from tpem_seg.models import NormalizationSpec, open_package  # noqa: E402
from tpem_seg.runtime import Segmenter  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models"
#: ../shared/data next to the project root (absent for users who clone the project).
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

#: A real volume with each bundled model's channels, where ../shared/data is at hand.
SAMPLES = {
    "vessels-2p": SHARED_DATA / "vesselnn_2pm" / "images" / "poon2015_BBB_Leakage.tif",
    "tpem-2ch": SHARED_DATA / "cellfinder_stpt" / "cellfinder_crop_2ch_CZYX.tif",
}


def _export(name: str, folder: Path) -> Path:
    sample = SAMPLES[name] if SAMPLES[name].exists() else None  # else the simulator's volume
    card = DOCS / f"{name}.md"
    return export_bioimageio(name, BioimageioExportOptions(folder / f"{name}.zip", sample=sample,
                                                           card=card if card.exists() else None))


@pytest.fixture(scope="module", params=["vessels-2p", "tpem-2ch"])
def exported_zip(request, tmp_path_factory) -> Path:
    return _export(request.param, tmp_path_factory.mktemp("bioimageio"))


def _status(source, **kwargs) -> str:
    return core.test_description(source, **kwargs).status


def test_export_passes_bioimageio_test_onnx(exported_zip):
    assert _status(exported_zip, weight_format="onnx") == "passed"


@pytest.mark.slow
def test_export_passes_bioimageio_test_all_weights(exported_zip):
    assert _status(exported_zip) == "passed"  # ONNX and the MONAI state dict


def test_export_contents(exported_zip):
    names = set(zipfile.ZipFile(exported_zip).namelist())
    assert {"model.onnx", "model.pt", "cover.png", "README.md", "test_input.npy", "test_output.npy"} <= names
    rdf = read_yaml(zipfile.ZipFile(exported_zip).open("rdf.yaml"))
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    package = open_package(rdf["name"])
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space", "space"]
    assert inp["axes"][1]["channel_names"] == package.manifest.channels
    assert out["axes"][1]["channel_names"] == package.manifest.classes
    assert [a["scale"] for a in inp["axes"][2:]] == pytest.approx(list(package.manifest.spacing))
    assert {a["unit"] for a in inp["axes"][2:]} == {"micrometer"}
    assert [a["size"] for a in inp["axes"][2:]] == list(package.manifest.tile)
    assert all(a["halo"] >= 1 for a in out["axes"][2:])
    steps = [[p["id"] for p in steps if p["id"] != "ensure_dtype"]  # bioimageio.spec adds casts
             for steps in (inp["preprocessing"], out["postprocessing"])]
    assert steps == [["scale_range", "clip"], ["softmax"]]
    assert inp["preprocessing"][1]["kwargs"]["axes"] == ["z", "y", "x"]  # per channel, per sample
    assert rdf["weights"]["onnx"]["opset_version"] <= 18 and "pytorch_state_dict" in rdf["weights"]
    assert "## Validation" in zipfile.ZipFile(exported_zip).read("README.md").decode()


def test_wrong_preprocessing_fails_bioimageio_test(exported_zip, tmp_path):
    """Negative control: the same model with other percentiles no longer reproduces its test output."""
    if exported_zip.stem != "vessels-2p":
        pytest.skip("one negative control is enough; it runs on vessels-2p")
    folder = tmp_path / "wrong"
    zipfile.ZipFile(exported_zip).extractall(folder)
    rdf = read_yaml(folder / "rdf.yaml")
    scale = next(p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range")
    scale["kwargs"].update(min_percentile=0.0, max_percentile=100.0)
    write_yaml(rdf, folder / "rdf.yaml")
    summary = core.test_description(folder / "rdf.yaml", weight_format="onnx")
    failed = [d.name for d in summary.details if d.status == "failed"]
    # The description stays valid; reproducing the test output is what fails.
    assert summary.status == "valid-format" and failed == ["Reproduce test outputs from test inputs (onnx)"]


def test_import_then_run_gives_the_original_labels(exported_zip, tmp_path, rng):
    original = open_package(exported_zip.stem)
    imported = import_bioimageio(exported_zip, tmp_path / "back.tpem")
    m, i = original.manifest, imported.manifest
    assert (i.channels, i.classes, i.tile, i.spacing, i.normalization, i.activation) == \
           (m.channels, m.classes, m.tile, m.spacing, m.normalization, m.activation)
    sample = SAMPLES[exported_zip.stem]
    if sample.exists():  # a real crop larger than a tile, so tiles overlap and stitch
        volume = read_volume(sample)
        data = volume.read_czyx(0, min(volume.shape_zyx[0], 24))[:, :, :100, :100]
    else:
        data = rng.gamma(2.0, 50.0, size=(m.config.in_channels, 24, 100, 100)).astype(np.float32)
    labels = [Segmenter(p, backend="onnxruntime", device="cpu").segment(data_volume(data, m.spacing))
              for p in (original, imported)]
    np.testing.assert_array_equal(labels[1], labels[0])
    assert len(np.unique(labels[0])) > 1 or not sample.exists()


def data_volume(data: np.ndarray, spacing):
    from tpem_seg.io import Volume

    return Volume(data, "CZYX", spacing=spacing)


# -- the mappings, checked against bioimageio.spec's own step descriptions ----------------------------


@pytest.mark.parametrize("spec", [NormalizationSpec(), NormalizationSpec(percentiles=(0.5, 99.0), clip=False),
                                  NormalizationSpec(mode="range", range=(100.0, 4000.0)),
                                  NormalizationSpec(mode="none", clip=False)])
def test_preprocessing_round_trips_through_spec_descriptions(spec):
    from bioimageio.spec.model.v0_5 import EnsureDtypeDescr

    kinds = {"ensure_dtype": EnsureDtypeDescr, "scale_range": ScaleRangeDescr, "scale_linear": ScaleLinearDescr,
             "clip": ClipDescr}
    steps = [kinds[s["id"]].model_validate(s) for s in preprocessing_steps(spec)]
    back = normalization_from_steps(steps)
    assert (back.mode, back.clip) == (spec.mode, spec.clip)
    if spec.mode == "percentile":
        assert back.percentiles == spec.percentiles
    if spec.mode == "range":
        assert back.range == pytest.approx(spec.range)


@pytest.mark.parametrize("steps,what", [
    ([ZeroMeanUnitVarianceDescr()], "zero_mean_unit_variance"),
    ([ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=["y", "x"], max_percentile=99.0))], "scale_range over axes"),
    ([ScaleLinearDescr(kwargs=ScaleLinearKwargs(gain=2.0)), ClipDescr(kwargs=ClipKwargs(min=0.0, max=255.0))],
     "clip"),
])
def test_unmappable_preprocessing_is_refused_in_one_line(steps, what):
    with pytest.raises(TpemSegError) as err:
        normalization_from_steps(steps)
    assert what in str(err.value) and "\n" not in str(err.value)


def test_activations():
    assert activation_from_steps([SoftmaxDescr(kwargs=SoftmaxKwargs(axis="channel"))]) == "softmax"
    assert activation_from_steps([SigmoidDescr()]) == "sigmoid"
    with pytest.raises(TpemSegError, match="postprocessing none"):
        activation_from_steps([])


def test_import_refuses_a_model_it_cannot_map(exported_zip, tmp_path):
    folder = tmp_path / "zmuv"
    zipfile.ZipFile(exported_zip).extractall(folder)
    rdf = read_yaml(folder / "rdf.yaml")
    rdf["inputs"][0]["preprocessing"] = [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["z", "y", "x"]}}]
    write_yaml(rdf, folder / "rdf.yaml")
    with pytest.raises(TpemSegError, match="zero_mean_unit_variance"):
        import_bioimageio(folder / "rdf.yaml", tmp_path / "no.tpem")
    assert not (tmp_path / "no.tpem").exists()


def test_cli_export_and_import(cli, tmp_path):
    zip_path = tmp_path / "v.zip"
    sample = SAMPLES["vessels-2p"]
    args = ["--sample", str(sample)] if sample.exists() else []
    result = cli(["bioimageio", "export", "vessels-2p", "-o", str(zip_path), *args])
    assert result.exit_code == 0, result.stderr
    assert zip_path.is_file() and not list(tmp_path.glob(".*partial*"))
    assert cli(["bioimageio", "import", str(zip_path), "-o", str(tmp_path / "v.tpem")]).exit_code == 0
    assert open_package(tmp_path / "v.tpem").manifest.classes == ["background", "vessel"]
    missing = cli(["bioimageio", "import", str(tmp_path / "absent.zip"), "-o", str(tmp_path / "x.tpem")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
