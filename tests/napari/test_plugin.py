"""The npe2 manifest, the reader, the writer and the sample data (no viewer needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tpem_seg.io import write_volume
from tpem_seg.napari._reader import get_reader
from tpem_seg.napari._sample import simulated_stack
from tpem_seg.napari._writer import write_labels

MANIFEST = Path(__file__).resolve().parents[2] / "tpem_seg" / "napari" / "napari.yaml"
SPACING = (5.0, 0.994, 0.621)
CLASSES = ["background", "vessel", "neuron"]


def test_manifest_is_valid_and_its_commands_import():
    pytest.importorskip("napari", reason="the widget command needs pip install 'tpem-seg[napari]'")
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()  # every python_name resolves
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["Segment"]
    assert contributions.writers[0].layer_types == ["labels"] and contributions.sample_data[0].key == "simulated"


@pytest.mark.parametrize("suffix", [".tif", ".zarr", ".npy"])
def test_labels_writer_reader_round_trip(tmp_path, rng, suffix):
    labels = rng.integers(0, 3, (6, 20, 24), dtype=np.uint8)
    path = tmp_path / f"labels{suffix}"
    written = write_labels(str(path), labels, {"scale": SPACING, "metadata": {"tpem_seg": {"classes": CLASSES}}})
    assert written == [str(path)]
    [(data, meta, kind)] = get_reader(str(path))(str(path))
    assert kind == "labels" and meta["scale"] == pytest.approx(SPACING, rel=1e-4)
    np.testing.assert_array_equal(data, labels)
    assert meta["metadata"]["tpem_seg"]["classes"] == CLASSES and meta["features"]["class"] == CLASSES


def test_writer_without_scale_writes_no_voxel_size(tmp_path, rng):
    from tpem_seg.io import read_volume

    path = tmp_path / "plain.tif"
    write_labels(str(path), rng.integers(0, 2, (4, 8, 8), dtype=np.uint8), {"scale": (1.0, 1.0, 1.0)})
    assert read_volume(path).spacing is None


def test_writer_refuses_what_it_cannot_write(tmp_path):
    from tpem_seg.errors import OutputError

    with pytest.raises(OutputError, match="3D"):
        write_labels(str(tmp_path / "x.tif"), np.zeros((4, 4), np.uint8), {})


def test_reader_opens_probabilities_as_channels_and_images_as_images(tmp_path, rng):
    probs = rng.random((3, 6, 20, 24), dtype=np.float32)
    write_volume(tmp_path / "p.zarr", probs, "CZYX", spacing=SPACING, channel_names=CLASSES)
    [(data, meta, kind)] = get_reader(str(tmp_path / "p.zarr"))(str(tmp_path / "p.zarr"))
    assert kind == "image" and meta["channel_axis"] == 0 and data.shape == probs.shape
    assert meta["name"] == [f"p: {c}" for c in CLASSES] and meta["scale"] == pytest.approx(SPACING)
    raw = rng.integers(0, 255, (6, 20, 24), dtype=np.uint8)  # an unmarked uint8 stack is an image
    write_volume(tmp_path / "raw.tif", raw, "ZYX", spacing=SPACING)
    [(_, meta, kind)] = get_reader(str(tmp_path / "raw.tif"))(str(tmp_path / "raw.tif"))
    assert kind == "image" and meta["scale"] == pytest.approx(SPACING, rel=1e-4)


def test_reader_declines_other_files():
    assert get_reader("notes.txt") is None and get_reader(["a.tif", "b.tif"]) is None


def test_sample_data_is_the_simulator_with_labels():
    (image, image_meta, image_kind), (labels, labels_meta, labels_kind) = simulated_stack()
    assert image_kind == "image" and image.shape[0] == 2 and image_meta["channel_axis"] == 0
    assert labels_kind == "labels" and labels.shape == image.shape[1:]
    assert set(np.unique(labels)) == {0, 1, 2} and image_meta["scale"] == labels_meta["scale"] == (5.0, 1.0, 1.0)
