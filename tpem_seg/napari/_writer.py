"""napari writer for Labels layers: the layer scale is written as the voxel size (µm), the class
names (from a tpem-seg segmentation or reader) go with it."""

from __future__ import annotations

from typing import Any

import numpy as np

from tpem_seg.errors import OutputError
from tpem_seg.io import write_volume


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a 3D Labels layer to ``path`` (``.tif``, ``.zarr``, ``.npy``); returns ``[path]``.

    A scale of all ones (napari's default) means "unknown voxel size" and is not written.
    """
    labels = np.asarray(data)
    if labels.ndim != 3:
        raise OutputError(f"tpem-seg writes 3D label images (Z, Y, X), not {labels.ndim}D; "
                          "save another layer or use napari's own writer")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
        raise OutputError("label values must lie in 0..65535 to be written by tpem-seg; relabel the layer")
    labels = labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16, copy=False)
    scale = tuple(float(s) for s in attributes.get("scale", (1.0,) * 3))[-3:]
    spacing = None if all(s == 1.0 for s in scale) else scale
    classes = (attributes.get("metadata") or {}).get("tpem_seg", {}).get("classes")
    if classes and len(classes) <= int(labels.max(initial=0)):
        classes = None  # the layer was edited past the known classes: names would mislead
    return [str(write_volume(path, labels, "ZYX", spacing=spacing, label_names=classes))]
