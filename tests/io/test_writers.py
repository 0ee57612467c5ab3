"""open_writer / write_volume: streaming round trips, TIFF metadata, atomicity, bad destinations."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tpem_seg.errors import OutputError
from tpem_seg.io import VolumeWriter, open_writer, read_volume, write_volume
from tpem_seg.io import writers as writers_module

SPACING = (5.0, 0.994, 0.621)
CLASSES = ["background", "vessel", "neuron"]


def _labels(rng) -> np.ndarray:
    return rng.integers(0, 3, size=(7, 12, 14), dtype=np.uint8)


def _probabilities(rng, dtype) -> np.ndarray:
    p = rng.random((3, 7, 12, 14), dtype=np.float32)
    return p.astype(np.float16) if dtype == np.float16 else (p * 255).astype(np.uint8)


def _stream(path: Path, data: np.ndarray, axes: str, slabs=(3, 3, 1), **kwargs) -> VolumeWriter:
    """Write ``data`` through open_writer in uneven z-slabs."""
    with open_writer(path, data.shape, data.dtype, axes, **kwargs) as writer:
        z = 0
        for dz in slabs:
            writer.write(data[z:z + dz] if axes == "ZYX" else data[:, z:z + dz])
            z += dz
    return writer


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


CASES = [("ZYX", np.uint8), ("CZYX", np.float16), ("CZYX", np.uint8)]


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".zarr"])
@pytest.mark.parametrize("axes,dtype", CASES, ids=["labels-u8", "probs-f16", "probs-u8"])
def test_streaming_round_trip(tmp_path, rng, suffix, axes, dtype):
    data = _labels(rng) if axes == "ZYX" else _probabilities(rng, dtype)
    names = CLASSES if axes == "CZYX" else None
    path = tmp_path / f"out{suffix}"
    _stream(path, data, axes, spacing=SPACING, channel_names=names)
    assert path.exists() and _leftovers(tmp_path) == []
    volume = read_volume(path)
    # ImageJ hyperstacks hold float32, not float16.
    stored = np.float32 if (suffix, dtype) == (".tif", np.float16) else dtype
    assert volume.dtype == stored and volume.axes.replace("C", "") == "ZYX"
    expected = data if axes == "CZYX" else data[np.newaxis]
    np.testing.assert_array_equal(volume.read_czyx(), expected)
    assert volume.spacing == pytest.approx(SPACING, rel=1e-4)
    if names and suffix != ".tif":  # ImageJ keeps channel names as plane labels: see the TIFF tests
        assert volume.channel_names == names


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".zarr"])
def test_unknown_spacing_stays_unknown(tmp_path, rng, suffix):
    path = tmp_path / f"nospacing{suffix}"
    write_volume(path, _labels(rng), "ZYX")
    assert read_volume(path).spacing is None


def test_tiff_labels_are_an_imagej_stack_with_scale(tmp_path, rng):
    path = tmp_path / "labels.tif"
    _stream(path, _labels(rng), "ZYX", spacing=SPACING)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and not tif.is_bigtiff
        assert tif.imagej_metadata["spacing"] == pytest.approx(5.0)
        assert tif.imagej_metadata["unit"] == "um" and tif.imagej_metadata["slices"] == 7
        x_res, y_res = tif.pages[0].resolution  # pixels per µm
        assert (1 / y_res, 1 / x_res) == pytest.approx(SPACING[1:], rel=1e-4)


def test_tiff_probabilities_pages_in_imagej_order(tmp_path, rng):
    data = _probabilities(rng, np.uint8)
    path = tmp_path / "probs.tif"
    _stream(path, data, "CZYX", spacing=SPACING)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZCYX"
        assert tif.imagej_metadata["channels"] == 3 and tif.imagej_metadata["slices"] == 7
        np.testing.assert_array_equal(tif.pages[1].asarray(), data[1, 0])  # z0 c1 is page 1


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_float16_probabilities_tiff_is_an_imagej_composite(tmp_path, rng, compression):
    data = _probabilities(rng, np.float16)
    path = tmp_path / "probs.tif"
    _stream(path, data, "CZYX", spacing=SPACING, channel_names=CLASSES, compression=compression)
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata
        assert tif.is_imagej and tif.series[0].axes == "ZCYX" and tif.series[0].dtype == np.float32
        assert meta["mode"] == "composite" and meta["spacing"] == pytest.approx(5.0) and meta["unit"] == "um"
        assert meta["Labels"] == CLASSES * 7  # channel names, one per plane in ZCYX order
        assert list(meta["Ranges"]) == [0.0, 1.0] * 3 and len(meta["LUTs"]) == 3
        np.testing.assert_array_equal(tif.series[0].asarray(), data.transpose(1, 0, 2, 3))


def test_napari_tiff_reads_probabilities_scale_and_channels(tmp_path, rng):
    reader = pytest.importorskip("napari_tiff.napari_tiff_reader", reason="napari-tiff is not installed")
    path = tmp_path / "probs.tif"
    _stream(path, _probabilities(rng, np.float16), "CZYX", spacing=SPACING, channel_names=CLASSES)
    [(data, meta, kind)] = reader.reader_function(str(path))
    assert kind == "image" and meta["channel_axis"] == 1 and np.shape(data) == (7, 3, 12, 14)
    assert meta["scale"] == pytest.approx(SPACING, rel=1e-4) and meta["units"] == ("um", "um", "um")
    assert meta["contrast_limits"] == [[0.0, 1.0]] * 3


def test_tiff_dtype_imagej_cannot_hold_is_plain_and_warns(tmp_path, rng, caplog):
    path = tmp_path / "wide.tif"
    with caplog.at_level(logging.WARNING, logger="tpem_seg.io.writers"):
        _stream(path, rng.integers(0, 9, (3, 7, 12, 14), dtype=np.int32), "CZYX", spacing=SPACING,
                channel_names=CLASSES)
    assert "Fiji" in caplog.text and ".zarr" in caplog.text
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_imagej and tif.series[0].axes == "ZCYX"
        assert tif.pages[0].resolutionunit == tifffile.RESUNIT.CENTIMETER
    assert read_volume(path).channel_names == CLASSES


@pytest.mark.parametrize("dtype", [np.uint8, np.float16])
@pytest.mark.parametrize("compression", ["zlib", "lzw"])
def test_compressed_tiff_round_trip(tmp_path, rng, dtype, compression):
    data = _probabilities(rng, dtype)
    path = tmp_path / "packed.tif"
    _stream(path, data, "CZYX", spacing=SPACING, compression=compression)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression != tifffile.COMPRESSION.NONE
        assert tif.is_imagej
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.read_czyx(), data)
    assert volume.spacing == pytest.approx(SPACING, rel=1e-4)


def test_bigtiff_when_over_threshold(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(writers_module, "BIGTIFF_THRESHOLD", 1000)  # stands in for ~4 GB
    data = _probabilities(rng, np.float16)
    _stream(tmp_path / "big.tif", data, "CZYX", spacing=SPACING, compression="zlib")
    _stream(tmp_path / "ij.tif", _labels(rng), "ZYX", spacing=SPACING)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
    with tifffile.TiffFile(tmp_path / "ij.tif") as tif:
        # Uncompressed ImageJ stacks stay classic TIFF: past 4 GB tifffile uses ImageJ's own layout.
        assert not tif.is_bigtiff and tif.is_imagej
    np.testing.assert_array_equal(read_volume(tmp_path / "big.tif").read_czyx(), data)


def test_zarr_is_ome_zarr_05_with_chunks_of_planes(tmp_path, rng, monkeypatch):
    import zarr

    monkeypatch.setattr(writers_module, "ZARR_CHUNK_BYTES", 12 * 14 * 2 * 2)  # 2 planes per chunk
    data = _probabilities(rng, np.float16)
    path = tmp_path / "probs.zarr"
    _stream(path, data, "CZYX", slabs=(3, 1, 2, 1), spacing=SPACING, channel_names=CLASSES)
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3 and group.attrs["ome"]["version"] == "0.5"
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == list("czyx")
    assert [a.get("unit") for a in multiscale["axes"]] == [None, *["micrometer"] * 3]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == pytest.approx([1.0, *SPACING])
    assert group["0"].chunks == (1, 2, 12, 14) and group["0"].metadata.dimension_names == tuple("czyx")
    np.testing.assert_array_equal(group["0"][:], data)


def test_zarr_pyramid_levels_halve_y_and_x(tmp_path, rng):
    import zarr

    labels, probs = _labels(rng), _probabilities(rng, np.uint8)
    write_volume(tmp_path / "l.zarr", labels, "ZYX", spacing=SPACING, label_names=CLASSES, levels=3)
    write_volume(tmp_path / "p.zarr", probs, "CZYX", spacing=SPACING, channel_names=CLASSES, levels=2)
    group = zarr.open_group(str(tmp_path / "l.zarr"), mode="r")
    np.testing.assert_array_equal(group["1"][:], labels[:, ::2, ::2])  # labels: nearest, never averaged
    np.testing.assert_array_equal(group["2"][:], labels[:, ::4, ::4])
    scales = [d["coordinateTransformations"][0]["scale"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    assert scales[2] == pytest.approx([SPACING[0], SPACING[1] * 4, SPACING[2] * 4])
    level1 = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["1"][:]
    means = probs.reshape(3, 7, 6, 2, 7, 2).mean(axis=(3, 5))
    assert level1.shape == (3, 7, 6, 7) and np.abs(level1 - means).max() <= 0.5
    with pytest.raises(OutputError, match="levels"):
        write_volume(tmp_path / "l.tif", labels, "ZYX", levels=2)


def test_ome_zarr_models_accepts_labels_and_probabilities(tmp_path, rng):
    import zarr

    pytest.importorskip("ome_zarr_models", reason="ome-zarr-models is not installed")
    from ome_zarr_models.common.omero import Omero
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    write_volume(tmp_path / "labels.zarr", _labels(rng), "ZYX", spacing=SPACING, label_names=CLASSES, levels=2)
    write_volume(tmp_path / "probs.zarr", _probabilities(rng, np.float16), "CZYX", spacing=SPACING,
                 channel_names=CLASSES)
    label = ImageLabel.from_zarr(zarr.open_group(str(tmp_path / "labels.zarr"), mode="r"))
    properties = label.ome_attributes.image_label.properties
    assert [p.model_dump()["class"] for p in properties] == CLASSES
    probs = zarr.open_group(str(tmp_path / "probs.zarr"), mode="r")
    Image.from_zarr(probs)
    omero = Omero.model_validate(probs.attrs["ome"]["omero"])  # v0.5 Image does not check omero itself
    assert [c.label for c in omero.channels] == CLASSES and omero.channels[1].window.end == 1.0


def test_napari_ome_zarr_opens_labels_as_labels_layer_with_scale(tmp_path, rng):
    reader = pytest.importorskip("napari_ome_zarr._reader", reason="napari-ome-zarr is not installed")
    # napari-ome-zarr 0.10 opens (creating it if absent) a zarr group two folders above a
    # label image, looking for its parent image: keep that inside tmp_path.
    out = tmp_path / "run" / "out"
    out.mkdir(parents=True)
    labels, probs = _labels(rng), _probabilities(rng, np.float16)
    write_volume(out / "labels.zarr", labels, "ZYX", spacing=SPACING, label_names=CLASSES)
    write_volume(out / "probs.zarr", probs, "CZYX", spacing=SPACING, channel_names=CLASSES)
    [(data, meta, kind)] = reader.napari_get_reader(str(out / "labels.zarr"))()
    assert kind == "labels" and meta["scale"] == pytest.approx(SPACING)
    np.testing.assert_array_equal(np.asarray(data[0]), labels)
    assert meta["properties"]["class"] == CLASSES and set(meta["colormap"]) == {0, 1, 2}
    [(data, meta, kind)] = reader.napari_get_reader(str(out / "probs.zarr"))()
    assert kind == "image" and meta["channel_axis"] == 0 and meta["name"] == [f"probs: {c}" for c in CLASSES]
    assert meta["scale"] == pytest.approx(SPACING) and meta["contrast_limits"] == [[0.0, 1.0]] * 3


def test_npy_has_json_sidecar(tmp_path, rng):
    path = tmp_path / "probs.npy"
    write_volume(path, _probabilities(rng, np.float16), "CZYX", spacing=SPACING, channel_names=CLASSES)
    meta = json.loads((tmp_path / "probs.npy.json").read_text())
    assert meta["axes"] == "CZYX" and meta["voxel_size_um_zyx"] == list(SPACING)
    assert np.load(path).shape == (3, 7, 12, 14)


def test_write_volume_transposes_other_axis_orders(tmp_path, rng):
    data = _probabilities(rng, np.uint8)
    zcyx = np.ascontiguousarray(data.transpose(1, 0, 2, 3))
    path = write_volume(tmp_path / "t.npy", zcyx, "ZCYX", spacing=SPACING)
    np.testing.assert_array_equal(np.load(path), data)


def test_existing_output_is_replaced_only_on_commit(tmp_path, rng):
    path = tmp_path / "out.zarr"
    write_volume(path, _labels(rng), "ZYX")
    before = read_volume(path).read_czyx()
    with pytest.raises(RuntimeError):
        with open_writer(path, (7, 12, 14), np.uint8, "ZYX") as writer:
            writer.write(np.ones((3, 12, 14), np.uint8))
            raise RuntimeError("boom")
    np.testing.assert_array_equal(read_volume(path).read_czyx(), before)
    write_volume(path, np.ones((7, 12, 14), np.uint8), "ZYX")
    assert read_volume(path).read_czyx().min() == 1 and _leftovers(tmp_path) == []


# -- atomicity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".npy", ".zarr"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_leaves_nothing_behind(tmp_path, rng, suffix, error):
    path = tmp_path / f"out{suffix}"
    with pytest.raises(error):
        with open_writer(path, (3, 7, 12, 14), np.float16, "CZYX", spacing=SPACING) as writer:
            writer.write(np.zeros((3, 4, 12, 14), np.float16))
            # While writing, only the hidden temporary exists.
            assert not path.exists() and len(_leftovers(tmp_path)) >= 1
            raise error()
    assert list(tmp_path.iterdir()) == []


def test_commit_of_incomplete_volume_fails_and_cleans_up(tmp_path):
    path = tmp_path / "short.tif"
    writer = open_writer(path, (5, 8, 8), np.uint8, "ZYX")
    writer.write(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="only 2 of 5"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_abort_removes_the_temporary_file(tmp_path):
    writer = open_writer(tmp_path / "a.npy", (2, 4, 4), np.uint8, "ZYX")
    writer.write(np.zeros((1, 4, 4), np.uint8))
    writer.abort()
    writer.abort()  # idempotent
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        writer.write(np.zeros((1, 4, 4), np.uint8))


# -- misuse and bad destinations ---------------------------------------------------------------------


def test_blocks_are_checked(tmp_path):
    with open_writer(tmp_path / "c.tif", (2, 4, 6, 6), np.uint8, "CZYX") as writer:
        with pytest.raises(ValueError, match="does not fit"):
            writer.write(np.zeros((3, 1, 6, 6), np.uint8))  # wrong class count
        with pytest.raises(ValueError, match="cannot write float32"):
            writer.write(np.zeros((2, 1, 6, 6), np.float32))  # probabilities must be scaled first
        with pytest.raises(ValueError, match="do not fit"):
            writer.write(np.full((2, 1, 6, 6), 300, np.int64))
        writer.write(np.zeros((2, 4, 6, 6), np.int64))  # integer labels in range are cast
        with pytest.raises(ValueError, match="overruns"):
            writer.write(np.zeros((2, 1, 6, 6), np.uint8))


def test_missing_output_folder(tmp_path, one_line):
    with pytest.raises(OutputError) as err:
        open_writer(tmp_path / "no" / "such" / "out.tif", (2, 4, 4), np.uint8, "ZYX")
    assert "does not exist" in one_line(err) and "mkdir" in one_line(err)


def test_unwritable_output_folder(tmp_path, one_line, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(OutputError) as err:
        open_writer(tmp_path / "out.tif", (2, 4, 4), np.uint8, "ZYX")
    assert "not writable" in one_line(err)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_folder(tmp_path, one_line):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(OutputError) as err:
        open_writer(folder / "out.npy", (2, 4, 4), np.uint8, "ZYX")
    assert "not writable" in one_line(err)


@pytest.mark.parametrize("name,expected", [("out.png", "unsupported output type"),
                                           ("out.ome.tif", "OME-TIFF"), ("out", "unsupported output type")])
def test_unsupported_output_names(tmp_path, one_line, name, expected):
    with pytest.raises(OutputError) as err:
        open_writer(tmp_path / name, (2, 4, 4), np.uint8, "ZYX")
    assert expected in one_line(err)


def test_existing_folder_in_the_way(tmp_path, one_line):
    (tmp_path / "taken.zarr").mkdir()
    (tmp_path / "taken.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError) as err:
        open_writer(tmp_path / "taken.zarr", (2, 4, 4), np.uint8, "ZYX")
    assert "not a zarr store" in one_line(err)
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(OutputError):
        open_writer(tmp_path / "dir.tif", (2, 4, 4), np.uint8, "ZYX")


@pytest.mark.parametrize("suffix,codec", [(".tif", "brotli-9"), (".npy", "zlib"), (".zarr", "lzw")])
def test_unknown_compression(tmp_path, one_line, suffix, codec):
    with pytest.raises(OutputError) as err:
        open_writer(tmp_path / f"out{suffix}", (2, 4, 4), np.uint8, "ZYX", compression=codec)
    one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_zarr_takes_blocks_in_any_order_and_refuses_an_incomplete_cover(tmp_path, rng):
    labels = _labels(rng)  # (7, 12, 14)
    boxes = [((0, 7), (6, 12), (0, 14)), ((0, 7), (0, 6), (7, 14)), ((0, 7), (0, 6), (0, 7))]
    with open_writer(tmp_path / "l.zarr", labels.shape, labels.dtype, "ZYX", label_names=CLASSES) as writer:
        for box in boxes:
            writer.write_block(box, labels[tuple(slice(lo, hi) for lo, hi in box)])
    np.testing.assert_array_equal(np.asarray(read_volume(tmp_path / "l.zarr").data), labels)
    writer = open_writer(tmp_path / "part.zarr", labels.shape, labels.dtype, "ZYX")
    writer.write_block(boxes[0], labels[:, 6:, :])
    with pytest.raises(ValueError, match="blocks of"):
        writer.commit()
    assert not (tmp_path / "part.zarr").exists()
    with open_writer(tmp_path / "l.tif", labels.shape, labels.dtype, "ZYX") as tif:
        with pytest.raises(ValueError, match="z-slabs"):
            tif.write_block(boxes[0], labels[:, 6:, :])
        tif.write(labels)
