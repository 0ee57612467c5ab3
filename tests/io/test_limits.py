"""Read limits and free-space checks, directly."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tpem_seg.errors import InputError, OutputError
from tpem_seg.io import limits, space


def test_unit_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv(limits.MEMORY_ENV, "1000")
    assert limits.unit_limit() == 1000
    limits.check_unit("f", "a page", 1000)
    with pytest.raises(InputError, match="more than one read may use"):
        limits.check_unit("f", "a page", 1001)
    for bad in ("lots", "0", "-5"):
        monkeypatch.setenv(limits.MEMORY_ENV, bad)
        with pytest.raises(InputError, match=limits.MEMORY_ENV):
            limits.unit_limit()


def test_default_limit_is_a_share_of_usable_memory(monkeypatch):
    monkeypatch.delenv(limits.MEMORY_ENV, raising=False)
    assert 0 < limits.unit_limit() <= limits.usable_memory() * limits.UNIT_SHARE


def test_ratio_bounds_per_codec():
    limits.check_ratio("f", 8, 1000 * 1032, 1000)  # deflate at its proven maximum
    with pytest.raises(InputError, match="at most 1032:1"):
        limits.check_ratio("f", 8, 1000 * 1032 + 5000, 1000)
    with pytest.raises(InputError, match="at most 1:1"):
        limits.check_ratio("f", 1, 10_000, 10)  # uncompressed: stored must hold it all
    limits.check_ratio("f", 50000, 10**12, 10)  # zstd: no proven bound, left to the memory limit


def test_plane_spread_over_too_many_chunks():
    limits.check_plane("f", (4, 512, 512), 0, 1, (1, 64, 64))
    with pytest.raises(InputError, match="spans 1000000 chunks"):
        limits.check_plane("f", (4, 16000, 16000), 0, 1, (1, 16, 16))


def test_free_space(tmp_path, monkeypatch):
    monkeypatch.setattr(space, "free_bytes", lambda folder: 10 * 2**20)
    space.check_free_space(tmp_path / "a.tif", 5 * 2**20)
    with pytest.raises(OutputError, match="needs about 11.6 MB but .* has 10.5 MB free"):
        space.check_free_space(tmp_path / "a.tif", 11 * 2**20)


def test_disk_full_is_recognised(tmp_path, monkeypatch):
    assert space.is_disk_full(OSError(errno.ENOSPC, "full"), tmp_path, 1)
    assert space.is_disk_full(OSError(errno.EDQUOT, "quota"), tmp_path, 1)
    assert not space.is_disk_full(OSError(errno.EACCES, "denied"), tmp_path, 1)
    monkeypatch.setattr(space, "free_bytes", lambda folder: 100)
    # tifffile's short write carries no errno: full when the disk has less than still needed.
    assert space.is_disk_full(OSError("16384 requested and 7856 written"), tmp_path, 16384)
    assert not space.is_disk_full(OSError("16384 requested and 7856 written"), tmp_path, 50)
    assert "partial file removed" in str(space.disk_full_error(Path(tmp_path / "a.tif"), 10**6))
