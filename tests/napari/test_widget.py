"""The dock widget in a real (headless, Xvfb) napari viewer, on a real two-photon stack."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari widget needs pip install 'tpem-seg[napari]'")
pytest.importorskip("pytestqt", reason="the widget tests need pytest-qt (pip install 'tpem-seg[dev]')")

#: ../shared/data next to the project root (absent for users who clone the project).
VESSELS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vesselnn_2pm"
NAME = "poon2015_BBB_Leakage"


@pytest.fixture(scope="module")
def real_crop():
    """A (15, 160, 160) crop of a real vesselNN stack, its labels and its voxel size (µm)."""
    if not (VESSELS / "images" / f"{NAME}.tif").exists():
        pytest.skip(f"real data folder {VESSELS} is absent (it is not part of the repository)")
    from tpem_seg.io import read_volume

    rows = {r["name"]: r for r in csv.DictReader(open(VESSELS / "volumes.csv"))}
    spacing = tuple(float(rows[NAME][f"spacing_{a}_um"]) for a in "zyx")
    crop = (slice(0, 15), slice(160, 320), slice(160, 320))
    image = read_volume(VESSELS / "images" / f"{NAME}.tif").read_czyx()[0][crop]
    labels = read_volume(VESSELS / "labels" / f"{NAME}.tif").read_czyx()[0][crop] > 0
    return image, labels, spacing


def _widget(viewer, layer, **settings):
    from tpem_seg.napari._widget import SegmentWidget

    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="tpem-seg")
    widget.images.value = [layer]
    widget.model.value = "vessels-2p"
    for name, value in settings.items():
        getattr(widget, name).value = value
    return widget


def test_widget_segments_a_real_stack(make_napari_viewer, qtbot, real_crop):
    from tpem_seg.runtime import Segmenter

    image, truth, spacing = real_crop
    viewer = make_napari_viewer(show=True)  # a hidden window's canvas is never drawn
    layer = viewer.add_image(image, name=NAME, scale=spacing, colormap="gray")
    widget = _widget(viewer, layer, probabilities=True)
    widget.start()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=240_000)
    labels_layer = viewer.layers[f"{NAME} labels"]
    assert tuple(labels_layer.scale) == pytest.approx(spacing) and labels_layer.data.shape == image.shape
    assert labels_layer.metadata["tpem_seg"]["classes"] == ["background", "vessel"]
    assert [f"{NAME} p({c})" in viewer.layers for c in ("background", "vessel")] == [True, True]
    # The widget runs exactly what the API runs...
    expected = Segmenter("vessels-2p", backend="onnxruntime", device="cpu").segment(image, spacing=spacing)
    np.testing.assert_array_equal(labels_layer.data, expected)
    # ...and finds the vessels the authors labelled (the model's cross-validated Dice is 0.72).
    found = labels_layer.data == 1
    dice = 2 * np.sum(found & truth) / (found.sum() + truth.sum())
    assert dice > 0.4, dice
    viewer.dims.set_point(0, spacing[0] * 7)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.std() > 10  # not a blank canvas
    red = (shot[..., 0] > 150) & (shot[..., 1] < 120)  # vessel labels are drawn in the class colour
    assert red.mean() > 0.005


def test_cancel_stops_and_adds_nothing(make_napari_viewer, qtbot, real_crop):
    image, _, spacing = real_crop
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.tile(image, (1, 2, 2)), name="big", scale=spacing)
    widget = _widget(viewer, layer, tta=True)
    widget.start()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=240_000)
    assert "big labels" not in viewer.layers and "cancelled" in widget.status.value


def test_user_errors_are_one_line_and_start_nothing(make_napari_viewer):
    from tpem_seg.napari._widget import SegmentWidget

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.start()  # no image layer
    assert widget.worker is None and widget.run_button.enabled
    viewer.add_image(np.zeros((4, 8, 8), np.float32), name="img")
    widget.images.value = [viewer.layers["img"]]
    widget.channels.value = "a,b"
    widget.start()
    assert widget.worker is None
