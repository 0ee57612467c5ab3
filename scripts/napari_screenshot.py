"""Screenshot of the tpem-seg napari widget after segmenting a real vesselNN stack (docs/napari_widget.png).

Run headless from the project root, next to ../shared/data:

    xvfb-run -a python scripts/napari_screenshot.py docs/napari_widget.png
"""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from pathlib import Path

# Settings of this run only (no toasts over the canvas), not saved into the user's napari config.
os.environ.setdefault("NAPARI_CONFIG", str(Path(tempfile.mkdtemp(prefix="napari-shot-")) / "settings.yaml"))

import napari
import numpy as np
from napari.settings import get_settings
from qtpy.QtWidgets import QApplication

from tpem_seg.io import read_volume
from tpem_seg.napari._widget import SegmentWidget

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vesselnn_2pm"
NAME = "poon2015_BBB_Leakage"


def main(out: str) -> None:
    rows = {r["name"]: r for r in csv.DictReader(open(DATA / "volumes.csv"))}
    spacing = tuple(float(rows[NAME][f"spacing_{a}_um"]) for a in "zyx")
    image = read_volume(DATA / "images" / f"{NAME}.tif").read_czyx()[0]
    get_settings().application.gui_notification_level = "error"
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    low, high = np.percentile(image, (1, 99.8))
    layer = viewer.add_image(image, name=NAME, scale=spacing, colormap="gray", contrast_limits=(low, high))
    widget = SegmentWidget(viewer)
    widget.max_width = 440  # leave the canvas most of the window
    viewer.window.add_dock_widget(widget, name="tpem-seg: Segment", area="right")
    widget.images.value = [layer]
    widget.model.value = "vessels-2p"
    widget.start()
    while widget.worker is not None:
        QApplication.processEvents()
    viewer.layers[f"{NAME} labels"].opacity = 0.55
    viewer.dims.set_point(0, spacing[0] * (image.shape[0] // 2))
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()
    viewer.screenshot(out, canvas_only=False, flash=False)
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/napari_widget.png")
