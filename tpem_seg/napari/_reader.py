"""napari reader for what tpem-seg reads and writes: the voxel size becomes the layer scale (µm),
label images (OME-Zarr image-label, or written with class names) open as a Labels layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable


from tpem_seg.io import read_volume
from tpem_seg.io.readers import sidecar_path
from tpem_seg.io.writers import LABEL_NAMES_KEY

_SUFFIXES = (".tif", ".tiff", ".zarr", ".npy")

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari's reader hook: a function for one tpem-seg-readable path, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_layers if str(path).lower().rstrip("/").endswith(_SUFFIXES) else None


def read_layers(path: str | list[str]) -> list[LayerData]:
    """One layer: Labels for a label image, else an Image (channels split) at the file's voxel size."""
    path = Path(path[0] if isinstance(path, list) else path)
    volume = read_volume(path)
    label_names = read_label_names(path)
    meta: dict[str, Any] = {"name": path.name.split(".")[0]}
    if volume.spacing is not None:
        meta.update(scale=tuple(volume.spacing), units=("µm",) * 3)
    data = volume.read_czyx()  # in memory: napari's labels tools need the array itself
    if label_names is not None and volume.n_channels == 1:
        meta["metadata"] = {"tpem_seg": {"classes": label_names}}
        meta["features"] = {"index": list(range(len(label_names))), "class": label_names}
        return [(data[0], meta, "labels")]
    if volume.n_channels == 1:
        return [(data[0], meta, "image")]
    names = volume.channel_names or [f"channel {i}" for i in range(volume.n_channels)]
    meta.update(channel_axis=0, name=[f"{meta['name']}: {n}" for n in names])
    return [(data, meta, "image")]


def read_label_names(path: Path) -> list[str] | None:
    """Class names stored with a label image by tpem-seg's writer (zarr, TIFF, npy), else None."""
    if path.suffix.lower() == ".zarr" or path.is_dir():
        import zarr

        ome = dict(zarr.open_group(str(path), mode="r").attrs).get("ome", {})
        properties = ome.get("image-label", {}).get("properties")
        if properties is None:
            return None
        by_value = {int(p["label-value"]): str(p.get("class", p["label-value"])) for p in properties}
        return [by_value.get(i, str(i)) for i in range(max(by_value) + 1)]
    if path.suffix.lower() == ".npy":
        sidecar = sidecar_path(path)
        names = json.loads(sidecar.read_text(encoding="utf-8")).get(LABEL_NAMES_KEY) if sidecar.exists() else None
        return [str(n) for n in names] if names else None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        properties = (tif.imagej_metadata or {}).get("Properties") or {}
    names = properties.get(LABEL_NAMES_KEY)
    return [str(n) for n in json.loads(names)] if names else None
