"""OME-Zarr: opening zarr arrays and OME-Zarr images lazily; the metadata the writer stores.

Reading takes level 0 of any NGFF 0.1-0.5 multiscale image. Writing targets NGFF 0.5
(zarr v3, metadata under the group's ``ome`` attribute): :func:`ome_attributes`
builds ``multiscales`` (axes with units, the voxel size as scale, one dataset per
pyramid level), an ``image-label`` for label images (colours, class names as
properties) and ``omero`` channels (label, colour, window) for multi-channel data.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence


import numpy as np

from tpem_seg.errors import InputError
from tpem_seg.io._meta import VOXEL_SIZE_KEY, RawVolume, Spacing, class_rgb, um_per_unit, valid_spacing
from tpem_seg.io.limits import check_unit

logger = logging.getLogger(__name__)

#: Files that mark a folder as a zarr store (zarr v2 array/group, zarr v3 node).
ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")

#: Metadata files of a zarr node: everything else in an array's folder is a chunk.
_METADATA_FILES = frozenset(ZARR_MARKERS + (".zattrs", ".zmetadata"))

#: What zarr raises on metadata it cannot parse: a damaged JSON file surfaces as any of these
#: from deep inside zarr (caught only around calls into zarr).
_OPEN_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, ZeroDivisionError,
                OverflowError, RecursionError, NotImplementedError)


def is_zarr_folder(path: Path) -> bool:
    """True when ``path`` is a folder holding a zarr array or group."""
    return path.is_dir() and any((path / marker).is_file() for marker in ZARR_MARKERS)


def open_zarr(path: Path) -> RawVolume:
    """Open a zarr array, or the level-0 array of an OME-Zarr image, without reading it.

    Raises:
        InputError: not a zarr store, or a group without OME-Zarr ``multiscales``.
    """
    import zarr  # heavy import, only for zarr inputs

    try:
        node = zarr.open(str(path), mode="r")
        attrs = dict(node.attrs)
    except _OPEN_ERRORS as err:
        raise InputError(
            f"{path} is not a readable zarr store ({type(err).__name__}: {err}); "
            "pass a .zarr folder holding an array or an OME-Zarr image"
        ) from err
    if hasattr(node, "shape"):
        check_chunks(path, node, path)
        return _plain_array(node, attrs)
    try:
        multiscales = _multiscales(attrs)
    except (TypeError, ValueError) as err:
        raise InputError(f"{path} has malformed OME-Zarr metadata (multiscales: {type(err).__name__}: {err}); "
                         "write the image again") from err
    if not multiscales:
        try:
            arrays = sorted(name for name, _ in node.arrays())
        except _OPEN_ERRORS as err:
            raise InputError(f"{path} is a zarr group with damaged members ({type(err).__name__}: {err}); "
                             "copy or write it again") from err
        hint = f"(e.g. {path / arrays[0]})" if arrays else "(it holds none)"
        raise InputError(f"{path} is a zarr group without OME-Zarr multiscales metadata; "
                         f"pass the path of the array inside it {hint}")
    try:
        return _ome_zarr(path, node, multiscales[0], attrs)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OSError) as err:  # OSError: e.g. a
        # dataset path longer than the file system allows
        raise InputError(f"{path} has malformed OME-Zarr metadata ({type(err).__name__}: {err}); "
                         f"pass the path of its level-0 array instead (e.g. {path}/0)") from err


def check_chunks(path: Path, array: Any, folder: Path) -> None:
    """Refuse a chunk too large to decode, or an array whose chunks are all missing.

    Zarr reads a missing chunk as the fill value, and writers skip chunks that equal
    it (empty background), so some missing chunks are normal: they are logged. None at
    all, for an array that declares data, is a copy that never finished.

    Raises:
        InputError: a chunk beyond :func:`~tpem_seg.io.limits.check_unit`, or no chunk stored.
    """
    chunks = [int(c) for c in array.chunks]
    if len(chunks) != len(array.shape) or min(chunks, default=1) < 1:
        raise InputError(f"{path} declares chunks {tuple(chunks)} for shape {tuple(array.shape)}; the metadata "
                         "are damaged: copy or write it again")
    check_unit(str(path), "a chunk", math.prod(chunks) * np.dtype(array.dtype).itemsize)
    expected = math.prod(-(-int(n) // c) for n, c in zip(array.shape, chunks))
    stored = sum(1 for root, _, files in os.walk(folder) for f in files
                 if f not in _METADATA_FILES and not (Path(root) / f).is_symlink())
    if stored == 0 and expected > 0:
        raise InputError(f"{path} declares a {'x'.join(map(str, array.shape))} array but stores no chunk of it; "
                         "the copy is incomplete: copy or write it again")
    if stored < expected:
        logger.warning("%s: %d of %d chunks are not stored and read as the fill value %s (writers skip empty "
                       "chunks; if the copy was interrupted, copy it again)", path, expected - stored, expected,
                       array.fill_value)


def _inside(path: Path, root: Path) -> bool:
    """True when ``path``, symlinks resolved, lies inside ``root`` (resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _dataset_folder(path: Path, rel: Any) -> Path:
    """The folder of an OME-Zarr dataset ``rel``: a relative path inside the image's folder.

    Raises:
        InputError: an absolute path, ``..`` segments, or a symlink leading out of ``path``.
    """
    if not isinstance(rel, str) or not rel:
        raise InputError(f"{path}: OME-Zarr dataset path {rel!r} is not a path; write the image again")
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
        raise InputError(f"{path}: OME-Zarr dataset path {rel!r} points outside the image's folder; "
                         "tpem-seg reads only data inside it: copy that array into the image or pass its path")
    folder = path.joinpath(*parts)
    if not _inside(folder, path):
        raise InputError(f"{path}: OME-Zarr dataset {rel!r} is a link to {folder.resolve()}, outside the image's "
                         "folder; copy the data into the image or pass that array's path")
    return folder


def _multiscales(attrs: Mapping[str, Any]) -> list[dict]:
    """OME-Zarr ``multiscales``: top level up to NGFF 0.4, under ``ome`` from 0.5 (zarr v3)."""
    ome = attrs.get("ome")
    found = ome["multiscales"] if isinstance(ome, Mapping) and "multiscales" in ome else attrs.get("multiscales")
    found = list(found or [])
    if not all(isinstance(m, Mapping) for m in found):
        raise TypeError("multiscales must be a list of objects")
    return found


def _plain_array(array: Any, attrs: Mapping[str, Any]) -> RawVolume:
    """A bare zarr array: axes from ``axes`` or xarray's ``_ARRAY_DIMENSIONS`` attributes."""
    axes = attrs.get("axes") or attrs.get("_ARRAY_DIMENSIONS")
    if isinstance(axes, (list, tuple)):
        axes = "".join(_axis_letter(name) for name in axes)
    names = attrs.get("channel_names") or []
    return RawVolume(data=array, axes=axes if isinstance(axes, str) else None,
                     spacing=valid_spacing(attrs.get(VOXEL_SIZE_KEY)), channel_names=[str(n) for n in names])


def _axis_letter(name: Any) -> str:
    """OME-Zarr axis name (``"c"``, ``"z"``, ``"t"``...) as a letter; unknown names become ``Q``."""
    if isinstance(name, Mapping):
        name = name.get("name", "")
    name = str(name).strip().upper()
    return name if len(name) == 1 and name in "TCZYX" else "Q"


def _scale(transforms: Any) -> list[float] | None:
    for transform in transforms or []:
        if transform.get("type") == "scale":
            return [float(s) for s in transform["scale"]]
    return None


def _ome_zarr(path: Path, group: Any, multiscale: Mapping[str, Any], attrs: Mapping[str, Any]) -> RawVolume:
    dataset = multiscale["datasets"][0]
    folder = _dataset_folder(path, dataset["path"])
    try:
        array = group[dataset["path"]]
    except KeyError as err:
        raise InputError(f"{path}: OME-Zarr level 0 ({dataset['path']!r}) is missing; "
                         "the image was not written completely, write it again") from err
    if not hasattr(array, "shape"):
        raise InputError(f"{path}: OME-Zarr level 0 ({dataset['path']!r}) is a group, not an array; "
                         "write the image again")
    check_chunks(path, array, folder)
    # NGFF 0.1/0.2 name no axes: they are always TCZYX.
    axes_meta = multiscale.get("axes") or list("tczyx")[-array.ndim:]
    axes = "".join(_axis_letter(a) for a in axes_meta)
    spacing = _ome_zarr_spacing(path, axes_meta, axes, dataset, multiscale)
    return RawVolume(data=array, axes=axes, spacing=spacing, channel_names=_channel_names(attrs))


def _ome_zarr_spacing(path: Path, axes_meta: list, axes: str, dataset: Mapping[str, Any],
                      multiscale: Mapping[str, Any]) -> Spacing | None:
    """Voxel size ``(z, y, x)`` µm of level 0: its scale times the multiscale-wide scale."""
    scale = _scale(dataset.get("coordinateTransformations"))
    if scale is None or any(a not in axes for a in "ZYX"):
        return None
    common = _scale(multiscale.get("coordinateTransformations"))
    if common is not None:
        scale = [s * c for s, c in zip(scale, common)]
    units = [a.get("unit") if isinstance(a, Mapping) else None for a in axes_meta]
    sizes = []
    for letter in "ZYX":
        i = axes.index(letter)
        factor = um_per_unit(units[i])
        if factor is None and units[i] is None:
            if all(scale[axes.index(a)] == 1.0 for a in "ZYX"):
                return None  # unitless scale of 1: just voxel indices
            logger.info("%s: OME-Zarr axes carry no unit; reading the scale as µm", path)
            factor = 1.0
        sizes.append(None if factor is None else scale[i] * factor)
    return valid_spacing(sizes)


def _channel_names(attrs: Mapping[str, Any]) -> list[str]:
    omero = attrs.get("omero") or (attrs.get("ome") or {}).get("omero") or {}
    names = [c.get("label") for c in omero.get("channels", []) if isinstance(c, Mapping)]
    if names and all(names):
        return [str(n) for n in names]
    return [str(n) for n in attrs.get("channel_names") or []]


# -- writing: NGFF 0.5 metadata ----------------------------------------------------------------------

#: The OME-Zarr (NGFF) version :func:`ome_attributes` describes.
NGFF_VERSION = "0.5"


def level_shape(shape: Sequence[int], level: int) -> tuple[int, ...]:
    """Shape of pyramid ``level``: y and x halved ``level`` times (rounded up), z and c kept.

    z is kept because two-photon stacks are already coarse in z (several µm per plane).
    """
    factor = 2**level
    return (*shape[:-2], -(-shape[-2] // factor), -(-shape[-1] // factor))


def _axes(axes: str, spacing: Spacing | None) -> list[dict[str, str]]:
    unit = {"unit": "micrometer"} if spacing is not None else {}
    return [{"name": "c", "type": "channel"} if a == "C" else {"name": a.lower(), "type": "space", **unit}
            for a in axes]


def _multiscale(name: str, axes: str, spacing: Spacing | None, levels: int) -> dict[str, Any]:
    z, y, x = spacing or (1.0, 1.0, 1.0)
    datasets = []
    for level in range(levels):
        scale = [z, y * 2**level, x * 2**level]
        if axes == "CZYX":
            scale.insert(0, 1.0)
        datasets.append({"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return {"name": name, "axes": _axes(axes, spacing), "datasets": datasets}


def _image_label(label_names: Sequence[str]) -> dict[str, Any]:
    """Colours (background transparent) and the class name of each label value."""
    colors = [{"label-value": 0, "rgba": [0, 0, 0, 0]}]
    colors += [{"label-value": i, "rgba": [*class_rgb(i), 255]} for i in range(1, len(label_names))]
    properties = [{"label-value": i, "class": str(n)} for i, n in enumerate(label_names)]
    return {"version": NGFF_VERSION, "colors": colors, "properties": properties}


def _window(dtype: np.dtype) -> dict[str, float]:
    """Display range: the integer type's range, or 0..1 for floats (probabilities)."""
    top = float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0
    bottom = float(np.iinfo(dtype).min) if dtype.kind == "i" else 0.0
    return {"min": bottom, "max": top, "start": 0.0 if dtype.kind == "i" else bottom, "end": top}


def _omero(channel_names: Sequence[str], dtype: np.dtype, depth: int) -> dict[str, Any]:
    window = _window(dtype)
    channels = [{"label": str(n), "color": "%02X%02X%02X" % class_rgb(i), "window": dict(window),
                 "active": True, "coefficient": 1.0, "family": "linear", "inverted": False}
                for i, n in enumerate(channel_names)]
    return {"channels": channels, "rdefs": {"model": "color", "defaultZ": depth // 2, "defaultT": 0}}


def ome_attributes(name: str, axes: str, shape: Sequence[int], dtype: np.dtype, spacing: Spacing | None,
                   channel_names: Sequence[str], label_names: Sequence[str], levels: int) -> dict[str, Any]:
    """The group attributes of an NGFF 0.5 image or image-label.

    Args:
        name: image name (shown by viewers).
        axes: ``"ZYX"`` or ``"CZYX"`` of the arrays.
        shape: level-0 shape, matching ``axes``.
        dtype: the arrays' data type (sets the omero display window).
        spacing: voxel size ``(z, y, x)`` in µm, or None (unitless scale 1).
        channel_names: one per channel of a CZYX image (omero channels), or empty.
        label_names: class names of label values 0..K-1 for a label image, or empty.
        levels: number of pyramid levels (datasets ``"0"``, ``"1"``...).

    Returns:
        ``{"ome": {...}}``, ready for ``group.attrs.update``.
    """
    ome: dict[str, Any] = {"version": NGFF_VERSION, "multiscales": [_multiscale(name, axes, spacing, levels)]}
    if label_names:
        ome["image-label"] = _image_label(label_names)
    if channel_names:
        ome["omero"] = _omero(channel_names, np.dtype(dtype), int(shape[-3]))
    return {"ome": ome}
