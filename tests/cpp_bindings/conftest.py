"""Shared pieces of the native-runtime tests: the bundled packages and the installed binding."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "tpem_seg" / "zoo"
CPP = ROOT / "cpp_bindings"
NOT_INSTALLED = "tpem_seg_cpp is not installed: run cpp_bindings/install.sh PYTHON"


@pytest.fixture(scope="session")
def tpem_seg_cpp():
    return pytest.importorskip("tpem_seg_cpp", reason=NOT_INSTALLED)


@pytest.fixture(scope="session")
def vessels_model(tpem_seg_cpp):
    return tpem_seg_cpp.Model(ZOO / "vessels-2p.tpem")
