"""``read_volume``: any supported file as a lazily read :class:`~tpem_seg.io.Volume`.

Formats (chosen by extension, zarr also by folder content):

- TIFF ``.tif/.tiff`` (also ``.ome.tif``, BigTIFF ``.btf/.tf8/.tf2``): plain stacks,
  ImageJ hyperstacks, OME-TIFF, tifffile "shaped" files; uncompressed or LZW, zlib,
  zstd... (decoding needs ``imagecodecs``).
- ``.npy``: memory-mapped; axes, voxel size and channel names from an optional
  sidecar ``NAME.npy.json`` (written by :func:`~tpem_seg.io.write_volume`).
- zarr folders: a bare array, or an OME-Zarr image (level 0 of its pyramid).

Nothing is loaded at open time: ``Volume.data`` is a :class:`LazyArray` that reads
only what is sliced (``Volume.read_czyx(z0, z1)`` reads those planes). It holds the
file open for as long as it lives; ``volume.data.close()`` releases it early.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tokenize
from pathlib import Path
from typing import Sequence

import numpy as np

from tpem_seg.errors import InputError
from tpem_seg.io._lazy import LazyArray
from tpem_seg.io._meta import VOXEL_SIZE_KEY, RawVolume, resolve_axes, valid_spacing
from tpem_seg.io._tiff import TIFF_SUFFIXES, open_tiff
from tpem_seg.io._zarr import is_zarr_folder, open_zarr
from tpem_seg.io.limits import check_plane
from tpem_seg.io.volume import Volume

logger = logging.getLogger(__name__)

SUPPORTED = ".tif/.tiff (plain, ImageJ, OME-TIFF, BigTIFF .btf/.tf8), .npy, .zarr (array or OME-Zarr)"


def read_volume(path: str | os.PathLike, axes: str | None = None,
                spacing: Sequence[float] | None = None) -> Volume:
    """Open the volume at ``path`` without loading it.

    Args:
        path: a TIFF file, a ``.npy`` file or a zarr folder.
        axes: the array's axes (e.g. ``"CZYX"``, ``"ZCYX"``), overriding the file's
            metadata; needed for 4D files whose metadata do not name their axes.
            Singleton dimensions may be left out (``"ZYX"`` for a ``1xZxYxX`` array).
        spacing: voxel size ``(z, y, x)`` in µm, overriding the file's.

    Returns:
        A :class:`Volume` whose ``data`` is a :class:`LazyArray` in the file's own
        axis order (e.g. ``CZYX``, ``ZCYX`` for ImageJ), ``spacing`` from the
        metadata (OME PhysicalSize*, ImageJ spacing+resolution, tifffile/zarr
        attributes) or None, and channel names when the file has them.

    Raises:
        InputError: missing path, unsupported or unreadable file, truncated TIFF,
            empty array, unknown axes of a 4D array (pass ``axes``).
    """
    path = Path(path).expanduser()
    raw = _open_raw(path)
    try:
        return _to_volume(raw, axes, spacing, str(path))
    except BaseException:
        raw.close()
        raise


def _open_raw(path: Path) -> RawVolume:
    """The file at ``path`` as opened by its format's reader."""
    if not path.exists():
        raise InputError(f"no such file: {path}; check the path")
    if path.is_dir():
        if is_zarr_folder(path) or path.suffix.lower() == ".zarr":
            return open_zarr(path)
        raise InputError(f"{path} is a folder but not a zarr store (no .zarray, .zgroup or zarr.json); "
                         f"pass a volume file: {SUPPORTED}")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return open_tiff(path)
    if suffix == ".npy":
        return open_npy(path)
    raise InputError(f"unsupported file type {suffix or '(no extension)'!r} for {path}; "
                     f"convert it to one of: {SUPPORTED}")


def open_npy(path: Path) -> RawVolume:
    """Memory-map a ``.npy`` file; axes/voxel size from its ``NAME.npy.json`` sidecar if any."""
    header = read_npy_header(path)
    if header.hasobject:
        # Never unpickle a volume: a pickle runs code. np.load(allow_pickle=False) would refuse it too,
        # with a message about memory maps; this one names the problem.
        raise InputError(f"{path} holds Python objects (dtype {header}), which tpem-seg never unpickles; "
                         "save the image as a numeric array (numpy.save of an integer or float array)")
    check_dtype(header, str(path))
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, OverflowError) as err:  # OverflowError: absurd declared shape
        raise InputError(f"{path} is not a readable .npy array ({type(err).__name__}: {err}); "
                         "save it with numpy.save (numeric dtype)") from err
    meta = read_sidecar(path)
    names = meta.get("channel_names") or []
    return RawVolume(data=data, axes=meta.get("axes"), spacing=valid_spacing(meta.get(VOXEL_SIZE_KEY)),
                     channel_names=[str(n) for n in names])


#: numpy's own bound on a ``.npy`` header (``max_header_size`` of ``numpy.load``).
NPY_MAX_HEADER_BYTES = 10000


def read_npy_header(path: Path) -> np.dtype:
    """The dtype a ``.npy`` file declares, read from its header alone (no data, no pickle).

    Raises:
        InputError: not a ``.npy`` header (zero bytes, another format, damaged).
    """
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as fh:
            major, _ = npy_format.read_magic(fh)
            # numpy reads a header of the declared length before it checks that length: bound it first.
            length_bytes = fh.read(2 if major == 1 else 4)
            declared = int.from_bytes(length_bytes, "little")
            if len(length_bytes) < (2 if major == 1 else 4) or declared > NPY_MAX_HEADER_BYTES:
                raise ValueError(f"header length {declared} beyond {NPY_MAX_HEADER_BYTES} bytes")
            fh.seek(-len(length_bytes), os.SEEK_CUR)
            read_header = npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
            _, _, dtype = read_header(fh)
    except (OSError, ValueError, EOFError, SyntaxError, TypeError, RecursionError, tokenize.TokenError) as err:
        # numpy parses the header as a Python literal: a damaged one fails in the tokenizer or parser.
        raise InputError(f"{path} is not a readable .npy array ({type(err).__name__}: {err}); "
                         "save it with numpy.save (numeric dtype)") from err
    return dtype


def sidecar_path(path: Path) -> Path:
    """Where the metadata of a ``.npy`` volume live: ``NAME.npy.json`` next to it."""
    return path.with_name(path.name + ".json")


def read_sidecar(path: Path) -> dict:
    """The JSON metadata next to ``path`` (``{}`` when there are none)."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: absurdly nested JSON
        raise InputError(f"{sidecar} is not valid JSON ({err}); fix or delete it") from err
    if not isinstance(meta, dict):
        raise InputError(f"{sidecar} must hold a JSON object with axes/{VOXEL_SIZE_KEY}; fix or delete it")
    return meta


def _to_volume(raw: RawVolume, axes: str | None, spacing: Sequence[float] | None, source: str) -> Volume:
    """Map ``raw`` to a Volume: axes resolved, singletons hidden, overrides applied."""
    shape = tuple(int(n) for n in raw.data.shape)
    if 0 in shape or not shape:
        raise InputError(f"{source} is empty (shape {shape}); pass a volume with data")
    check_dtype(np.dtype(raw.data.dtype), source)
    if math.prod(shape) > MAX_VOXELS:  # exact: Python ints, before any int64 arithmetic can overflow
        raise InputError(f"{source} declares {math.prod(shape):.3g} voxels (shape {shape}), more than any volume "
                         f"this reads ({MAX_VOXELS:.3g}); its header is damaged: copy or export it again")
    letters, drop = resolve_axes(shape, raw.axes, axes, source)
    # The runtime reads whole z-planes (all channels) at once; a 2D image is read whole (z_axis -1).
    z_axis = [i for i in range(len(shape)) if i not in drop][letters.index("Z")] if "Z" in letters else -1
    chunks = getattr(raw.data, "chunks", None)
    check_plane(source, shape, z_axis, np.dtype(raw.data.dtype).itemsize,
                tuple(chunks) if isinstance(chunks, tuple) else None)
    data = LazyArray(raw.data, source, drop=drop, closers=raw.closers)
    raw.closers = []  # now owned by ``data``
    if "Z" not in letters and len(letters) in (2, 3):
        letters, data = _as_single_plane_stack(data, letters, source)
    names = raw.channel_names if len(raw.channel_names) == _channels(data.shape, letters) else []
    volume = Volume(data=data, axes=letters,
                    spacing=tuple(spacing) if spacing is not None else raw.spacing,  # type: ignore[arg-type]
                    channel_names=list(names))
    logger.debug("read %s: axes %s shape %s %s, voxel size %s µm", source, volume.axes,
                 tuple(data.shape), data.dtype, volume.spacing)
    return volume


#: Most voxels a volume may declare (2^48, 281 T: a petabyte of 32-bit floats). Sparse zarr stores and
#: damaged headers can declare any shape; beyond this, sizes overflow int64 byte counts.
MAX_VOXELS = 2**48

#: Kinds of numpy dtype a volume may hold: unsigned and signed integers, floats.
VOLUME_DTYPE_KINDS = "uif"


def check_dtype(dtype: np.dtype, source: str) -> None:
    """Refuse data that are not intensities: complex, structured, boolean, text, Python objects.

    Raises:
        InputError: naming the dtype and the conversion to make.
    """
    if dtype.kind in VOLUME_DTYPE_KINDS and dtype.fields is None:
        return
    what = {"c": "complex numbers", "b": "booleans (a mask?)", "V": "records (a structured dtype)",
            "O": "Python objects", "U": "text", "S": "bytes", "M": "dates", "m": "time spans"}.get(dtype.kind, "")
    raise InputError(f"{source} holds {what or dtype.kind} ({dtype}), not intensities; save the image as "
                     "integers or floats (e.g. numpy: arr.astype('float32'), or the magnitude of complex data)")


def _channels(shape: Sequence[int], axes: str) -> int:
    return int(shape[axes.index("C")]) if "C" in axes else 1


def _as_single_plane_stack(data: LazyArray, axes: str, source: str) -> tuple[str, LazyArray]:
    """A 2D image (``YX``/``CYX``) as a one-plane stack: one plane fits in memory."""
    logger.info("%s is a single image (axes %s); segmenting it as a one-plane stack", source, axes)
    with data:
        plane = data[...]
    return "Z" + axes, LazyArray(plane[np.newaxis], source)
