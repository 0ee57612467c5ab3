"""The native runtime against the Python runtime on ONNX Runtime, on the real volumes in ../shared/data.

Each volume at its own voxel size (so the vessel stacks at 2.485 and 0.621 µm, and the cellfinder
stack at (5, 2, 2) µm against tpem-2ch's (5, 1, 1), run the resampling path), cropped to keep the test
quick: labels equal on >= 99.99% of voxels, probabilities within 1e-4.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tests.cpp_bindings.conftest import ZOO

VESSELS = SHARED_DATA / "vesselnn_2pm"
CELLFINDER = SHARED_DATA / "cellfinder_stpt" / "cellfinder_crop_2ch_CZYX.tif"
#: crop extent in y and x, in the model's voxels (the input crop is scaled by the voxel-size ratio so
#: every case runs about 2 x 2 x 2 tiles)
MODEL_YX = (100, 112)


def _vessel_volumes():
    table = VESSELS / "volumes.csv"
    if not table.is_file():
        return []
    with open(table, newline="") as f:
        return [(row["name"], (float(row["spacing_z_um"]), float(row["spacing_y_um"]), float(row["spacing_x_um"])))
                for row in csv.DictReader(f)]


def _cases():
    cases = [pytest.param("vessels-2p", VESSELS / "images" / f"{name}.tif", spacing, id=name)
             for name, spacing in _vessel_volumes()]
    cases.append(pytest.param("tpem-2ch", CELLFINDER, (5.0, 2.0, 2.0), id="cellfinder_2ch"))
    return cases


def _crop(path, package, spacing):
    tifffile = pytest.importorskip("tifffile")
    if not path.is_file():
        pytest.skip(f"{path} is absent (real data lives in ../shared/data)")
    data = tifffile.imread(path)
    data = data if data.ndim == 4 else data[None]
    model_yx = 1.0 if package == "tpem-2ch" else 0.994
    h, w = (round(n * model_yx / spacing[1]) for n in MODEL_YX)
    return np.ascontiguousarray(data[:, :20, 100:100 + h, 150:150 + w])


def _probabilities(logits, activation):
    from tpem_seg.runtime.outputs import to_probabilities

    return to_probabilities(np.array(logits, np.float32), activation)


@pytest.mark.parametrize("package,path,spacing", _cases())
def test_labels_and_probabilities_match_python_runtime(tpem_seg_cpp, package, path, spacing):
    from tpem_seg.runtime.segmenter import Segmenter

    volume = _crop(path, package, spacing)
    native = tpem_seg_cpp.Model(ZOO / f"{package}.tpem")
    labels = native.segment(volume, spacing=spacing)
    probabilities = native.segment(volume, spacing=spacing, output="probabilities")

    axes = "CZYX"
    with Segmenter(ZOO / f"{package}.tpem", backend="onnxruntime", device="cpu") as python:
        expected_labels = python.segment(volume, axes=axes, spacing=spacing)
    with Segmenter(ZOO / f"{package}.tpem", backend="onnxruntime", device="cpu", output="logits") as python:
        logits = python.segment(volume, axes=axes, spacing=spacing)
    expected_probabilities = _probabilities(logits, native.info["activation"])

    assert labels.shape == expected_labels.shape and labels.dtype == np.uint8
    agreement = float((labels == expected_labels).mean())
    assert agreement >= 0.9999, f"labels agree on {agreement:.6f} of voxels"
    assert expected_labels.any(), "the crop shows no foreground: the comparison would say little"
    worst = float(np.abs(probabilities - expected_probabilities).max())
    assert worst <= 1e-4, f"probabilities differ by up to {worst:.2e}"
