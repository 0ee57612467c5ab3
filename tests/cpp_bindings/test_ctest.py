"""Runs the C tests of libtpem's ABI (AddressSanitizer + UndefinedBehaviorSanitizer build) with ctest,
so the project's one pytest command covers them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.cpp_bindings.conftest import CPP

BUILD = CPP / "build" / "test"


def test_c_abi_under_sanitizers():
    ctest = shutil.which("ctest")
    if ctest is None or not (BUILD / "CTestTestfile.cmake").is_file():
        pytest.skip(f"no C test build in {BUILD}: run cpp_bindings/install.sh PYTHON")
    run = subprocess.run([ctest, "--test-dir", str(BUILD), "--output-on-failure", "-j2"], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "100% tests passed" in run.stdout
