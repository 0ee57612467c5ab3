"""Hostile and damaged inputs: each is refused with one InputError line, and left byte for byte as it was.

Every case compares the input's checksum (a file's sha256, or a folder's sorted tree of names and
sha256s) before and after the attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from digests import tree_digest
from tpem_seg.errors import InputError
from tpem_seg.io import read_volume, write_volume
from tpem_seg.io.limits import MEMORY_ENV


@contextlib.contextmanager
def untouched(*paths: Path):
    """Assert that ``paths`` have the same content after the block as before it."""
    before = [tree_digest(p) for p in paths]
    yield
    assert [tree_digest(p) for p in paths] == before


def refused(path: Path, one_line, read_plane: bool = True, **kwargs) -> str:
    """The one-line InputError of opening ``path`` (and reading its first plane); input untouched."""
    with untouched(path), pytest.raises(InputError) as err:
        volume = read_volume(path, **kwargs)
        if read_plane:
            volume.read_czyx(0, 1)
    return one_line(err)


# -- TIFF: one volume per file -----------------------------------------------------------------------


def test_pages_of_different_shapes_are_refused(tmp_path, one_line):
    # A generic TIFF (no tifffile description) whose last page is smaller: read as the first series
    # alone, it used to become a shorter stack without a word.
    path = tmp_path / "shapes.tif"
    with tifffile.TiffWriter(path) as tif:
        for _ in range(3):
            tif.write(np.ones((16, 16), np.uint8), metadata=None)
        tif.write(np.ones((8, 8), np.uint8), metadata=None)
    message = refused(path, one_line)
    assert "2 separate images" in message and "16x16" in message and "8x8" in message


def test_pages_of_different_dtypes_are_refused(tmp_path, one_line):
    path = tmp_path / "dtypes.tif"
    with tifffile.TiffWriter(path) as tif:
        for dtype in (np.uint8, np.uint8, np.uint16):
            tif.write(np.ones((16, 16), dtype), metadata=None)
    message = refused(path, one_line)
    assert "uint8" in message and "uint16" in message and "own file" in message


def test_several_shaped_series_are_refused(tmp_path, one_line):
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.ones((4, 16, 16), np.uint8), photometric="minisblack")
        tif.write(np.ones((2, 8, 8), np.uint8))
    assert "separate images" in refused(path, one_line)


def test_reduced_thumbnail_series_does_not_count(tmp_path):
    # A full-resolution stack plus a reduced-resolution preview page (subfiletype 1) is one volume.
    path = tmp_path / "thumb.tif"
    stack = np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16)
    with tifffile.TiffWriter(path) as tif:
        tif.write(stack, metadata=None, photometric="minisblack")
        tif.write(np.ones((8, 8), np.uint16), subfiletype=1, metadata=None)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.read_czyx()[0], stack)


# -- empty, misnamed and truncated files -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".btf"])
def test_zero_byte_files(tmp_path, suffix, one_line):
    path = tmp_path / f"empty{suffix}"
    path.touch()
    assert "not a readable" in refused(path, one_line)


@pytest.mark.parametrize("name", ["stack.tif", "stack.npy"])
def test_folder_named_like_a_file(tmp_path, name, one_line):
    path = tmp_path / name
    path.mkdir()
    (path / "notes.txt").write_text("not an image")
    assert "is a folder but not a zarr store" in refused(path, one_line)


def test_tiled_tiff_ending_mid_tile(tmp_path, one_line):
    full = tmp_path / "tiled.tif"
    tifffile.imwrite(full, np.random.default_rng(0).integers(0, 255, (3, 64, 64), np.uint8), tile=(32, 32),
                     compression="zlib", metadata=None)
    with tifffile.TiffFile(full) as tif:
        last = tif.pages[-1]
        cut = int(last.dataoffsets[-1]) + int(last.databytecounts[-1]) // 2
    path = tmp_path / "cut.tif"
    path.write_bytes(full.read_bytes()[:cut])
    assert "truncated" in refused(path, one_line)


def test_stripped_tiff_ending_mid_strip(tmp_path, one_line):
    full = tmp_path / "strips.tif"
    with tifffile.TiffWriter(full) as tif:  # page by page: IFD, strips, IFD, strips...
        for plane in np.random.default_rng(1).integers(0, 255, (3, 64, 64), np.uint8):
            tif.write(plane, rowsperstrip=8, metadata=None)
    with tifffile.TiffFile(full) as tif:
        cut = int(tif.pages[-1].dataoffsets[3]) + 5
    path = tmp_path / "cut.tif"
    path.write_bytes(full.read_bytes()[:cut])
    assert "truncated" in refused(path, one_line)


def test_npy_ending_mid_data(tmp_path, one_line):
    full = tmp_path / "full.npy"
    np.save(full, np.ones((4, 64, 64), np.uint16))
    path = tmp_path / "cut.npy"
    path.write_bytes(full.read_bytes()[:5000])
    assert "not a readable .npy" in refused(path, one_line)


# -- decompression bombs -----------------------------------------------------------------------------


def _inflate_header(path: Path, width: int, height: int) -> None:
    """Make every page of ``path`` declare ``height x width`` pixels, leaving its data as they are."""
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for page in tif.pages:
            page.tags["ImageWidth"].overwrite(width)
            page.tags["ImageLength"].overwrite(height)


@pytest.mark.parametrize("compression", [None, "zlib", "lzw", "zstd"])
def test_page_larger_than_memory_is_refused_before_reading(tmp_path, compression, one_line):
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.ones((3, 32, 32), np.uint8), compression=compression, metadata=None)
    _inflate_header(path, 2**31 - 1, 2**20)  # 2 PB per page, in a file of a few kB
    message = refused(path, one_line, read_plane=False)
    assert "declares a page of" in message and MEMORY_ENV in message


def test_page_over_the_configured_read_limit(tmp_path, monkeypatch, one_line):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.ones((2, 64, 64), np.uint16), metadata=None)
    monkeypatch.setenv(MEMORY_ENV, str(64 * 64 * 2 - 1))
    assert "more than one read may use" in refused(path, one_line, read_plane=False)
    monkeypatch.setenv(MEMORY_ENV, str(64 * 64 * 2))
    assert read_volume(path).read_czyx(0, 1).shape == (1, 1, 64, 64)


def test_deflate_page_beyond_its_largest_ratio(tmp_path, one_line):
    # 4000 x 4000 = 16 MB fits in memory, but a few dozen deflate bytes can never inflate to it.
    path = tmp_path / "ratio.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 8), np.uint8), compression="zlib", metadata=None)
    _inflate_header(path, 4000, 4000)
    assert "more than its compression can hold" in refused(path, one_line, read_plane=False)


def test_npy_header_larger_than_its_file(tmp_path, one_line):
    path = tmp_path / "bomb.npy"
    np.save(path, np.ones((2, 4, 4), np.uint8))
    # Same header length, 729 declared bytes over 32 stored.
    path.write_bytes(path.read_bytes().replace(b"(2, 4, 4)", b"(9, 9, 9)"))
    assert "not a readable .npy" in refused(path, one_line, read_plane=False)


def test_zarr_chunk_larger_than_memory(tmp_path, one_line):
    import zarr

    path = tmp_path / "bomb.zarr"
    zarr.open_array(str(path), mode="w", shape=(10**5, 10**5, 10**5), chunks=(1, 10**5, 10**5), dtype="u1",
                    zarr_format=2)
    message = refused(path, one_line, read_plane=False)
    assert "declares a chunk of" in message


# -- npy dtypes ----------------------------------------------------------------------------------------


def test_npy_with_python_objects_is_never_unpickled(tmp_path, one_line):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None, 3], dtype=object), allow_pickle=True)
    message = refused(path, one_line, read_plane=False)
    assert "Python objects" in message and "never unpickles" in message


def test_npy_pickle_payload_does_not_run(tmp_path, one_line):
    # A pickle that would create a file when loaded: refusing it must not load it.
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "payload.npy"
    np.save(path, np.array([Payload()], dtype=object), allow_pickle=True)
    refused(path, one_line, read_plane=False)
    assert not marker.exists()


@pytest.mark.parametrize("dtype, word", [(np.complex64, "complex"), (bool, "booleans"),
                                         ([("a", "u1"), ("b", "f4")], "structured"), ("U3", "text")])
def test_npy_non_intensity_dtypes(tmp_path, dtype, word, one_line):
    path = tmp_path / "odd.npy"
    np.save(path, np.zeros((3, 8, 8), dtype=dtype))
    assert word in refused(path, one_line, read_plane=False)


def test_complex_tiff_is_refused(tmp_path, one_line):
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.complex64))
    assert "complex" in refused(path, one_line, read_plane=False)


def test_npy_sidecar_nested_too_deep(tmp_path, one_line):
    path = tmp_path / "v.npy"
    np.save(path, np.ones((3, 8, 8), np.uint8))
    Path(str(path) + ".json").write_text("[" * 100000 + "]" * 100000)
    with untouched(Path(str(path) + ".json")):
        assert "not valid JSON" in refused(path, one_line, read_plane=False)


# -- zarr ----------------------------------------------------------------------------------------------


@pytest.fixture
def zarr_array(tmp_path) -> tuple[Path, np.ndarray]:
    import zarr

    data = np.random.default_rng(2).integers(1, 200, (8, 32, 32)).astype(np.uint8)
    path = tmp_path / "plain.zarr"
    array = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=(2, 16, 16), dtype=data.dtype,
                            zarr_format=2)
    array[:] = data
    return path, data


def test_zarr_with_a_missing_chunk_reads_fill_value_and_warns(zarr_array, caplog):
    # Writers skip chunks equal to the fill value, so a missing chunk is allowed, but said.
    path, data = zarr_array
    (path / "0.0.0").unlink()
    with untouched(path):
        volume = read_volume(path)
        read = volume.read_czyx()[0]
    assert "1 of 16 chunks are not stored" in caplog.text
    expected = data.copy()
    expected[0:2, 0:16, 0:16] = 0
    np.testing.assert_array_equal(read, expected)


def test_zarr_without_any_chunk_is_refused(zarr_array, one_line):
    path, _ = zarr_array
    for chunk in path.glob("[0-9]*"):
        chunk.unlink()
    assert "stores no chunk" in refused(path, one_line, read_plane=False)


@pytest.mark.parametrize("damage", [b"garbage", None])
def test_zarr_with_a_corrupt_chunk(zarr_array, damage, one_line):
    path, _ = zarr_array
    chunk = path / "0.0.0"
    raw = chunk.read_bytes()
    chunk.write_bytes(damage if damage is not None else raw[: len(raw) // 2])
    assert "damaged" in refused(path, one_line)


@pytest.fixture
def ome_zarr(tmp_path) -> Path:
    data = np.ones((4, 16, 16), np.uint8)
    write_volume(tmp_path / "other.zarr", data, "ZYX")
    return write_volume(tmp_path / "image.zarr", data, "ZYX")


def _point_level0(path: Path, rel: str) -> None:
    """Point the first multiscales level at ``rel`` (OME-Zarr 0.5: zarr v3 group attributes)."""
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["ome"]["multiscales"][0]["datasets"][0]["path"] = rel
    (path / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("rel", ["../other.zarr/0", "0/../../other.zarr/0", "ABSOLUTE"])
def test_ome_zarr_level_outside_its_folder(ome_zarr, rel, one_line):
    other = ome_zarr.parent / "other.zarr"
    _point_level0(ome_zarr, str(other / "0") if rel == "ABSOLUTE" else rel)
    with untouched(other):
        assert "points outside the image's folder" in refused(ome_zarr, one_line, read_plane=False)


def test_ome_zarr_level_linked_outside_its_folder(ome_zarr, one_line):
    other = ome_zarr.parent / "other.zarr"
    os.symlink(other / "0", ome_zarr / "linked")
    _point_level0(ome_zarr, "linked")
    with untouched(other):
        assert "outside the image's folder" in refused(ome_zarr, one_line, read_plane=False)


def test_ome_zarr_level_inside_a_subfolder_is_fine(ome_zarr):
    shutil.copytree(ome_zarr / "0", ome_zarr / "levels" / "0")
    (ome_zarr / "levels" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    shutil.rmtree(ome_zarr / "0")
    _point_level0(ome_zarr, "levels/0")
    assert read_volume(ome_zarr).shape_zyx == (4, 16, 16)


def test_2d_zarr_image_larger_than_a_read(tmp_path, monkeypatch, one_line):
    # A 2D image is read whole (as a one-plane stack): it must fit the read limit too.
    import zarr

    path = tmp_path / "wide.zarr"
    array = zarr.open_array(str(path), mode="w", shape=(64, 64), chunks=(32, 32), dtype="u2", zarr_format=2)
    array[:] = 1
    monkeypatch.setenv(MEMORY_ENV, str(64 * 64 * 2 - 1))
    assert "declares a z-plane of" in refused(path, one_line, read_plane=False)
