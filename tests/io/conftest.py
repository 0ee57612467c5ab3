"""Helpers for the I/O tests: small volumes made in tmp_path, the real data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tpem_seg.errors import TpemSegError

#: ../shared/data next to the project root (absent for users who clone the project).
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _assert_one_line(err: pytest.ExceptionInfo[TpemSegError]) -> str:
    message = str(err.value)
    assert message and "\n" not in message, message
    return message


@pytest.fixture
def one_line():
    """``one_line(excinfo)``: asserts the error message is one non-empty line and returns it."""
    return _assert_one_line


@pytest.fixture
def zyx(rng) -> np.ndarray:
    """A small uint16 stack (Z, Y, X) = (6, 20, 24)."""
    return rng.integers(0, 4000, size=(6, 20, 24), dtype=np.uint16)


@pytest.fixture
def czyx(rng) -> np.ndarray:
    """A small 2-channel uint8 stack (C, Z, Y, X) = (2, 5, 16, 18)."""
    return rng.integers(0, 255, size=(2, 5, 16, 18), dtype=np.uint8)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it is not part of the repository)")
    return SHARED_DATA
