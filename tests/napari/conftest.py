"""napari plugin tests: skip with a reason where napari or a display is missing.

The reader, writer and sample data need neither (they are plain functions); the widget tests
skip without napari and pytest-qt (``pip install 'tpem-seg[napari,dev]'``).

The viewer tests need an X display with OpenGL: run them under Xvfb
(``xvfb-run -a python -m pytest tests/napari``; ``scripts/install_napari_deps.sh`` installs
it). ``QT_QPA_PLATFORM=offscreen`` gives no OpenGL context, so napari cannot draw there.
"""

from __future__ import annotations

import os

import pytest


def pytest_runtest_setup(item):
    if "make_napari_viewer" in getattr(item, "fixturenames", ()) and not os.environ.get("DISPLAY"):
        pytest.skip("no X display for a napari viewer: run under Xvfb, e.g. xvfb-run -a python -m pytest "
                    "(scripts/install_napari_deps.sh installs it)")
