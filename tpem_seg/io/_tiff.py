"""Opening TIFF files (plain, ImageJ, OME, tifffile-shaped, compressed, BigTIFF) lazily.

The first series of the file is the volume. Uncompressed contiguous data are
memory-mapped; anything else (compressed, tiled, pages scattered between IFDs) is
read plane by plane through tifffile's zarr store, which decodes only the pages
that a slice touches.
"""

from __future__ import annotations

import logging
import struct
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import tifffile

from tpem_seg.errors import InputError
from tpem_seg.io._meta import VOXEL_SIZE_KEY, RawVolume, Spacing, um_per_unit, valid_spacing
from tpem_seg.io.limits import check_ratio, check_unit

logger = logging.getLogger(__name__)

#: TIFF extensions read here (``.ome.tif`` ends in ``.tif``). ``.btf``/``.tf8``/``.tf2`` are BigTIFF names.
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")

#: Resolutions in pixels per inch that imaging software writes by default for
#: display or print (72 dpi = 353 µm pixels): they say nothing about the sample.
_DEFAULT_DPI = {72.0, 96.0, 150.0, 300.0, 600.0}

#: What tifffile raises on a file it cannot parse. Damaged tags surface from deep inside it as
#: any of these (a RuntimeError from a decoder, a TypeError from a tag of the wrong type...);
#: they are caught only around calls into tifffile, never around this module's own logic.
_PARSE_ERRORS = (tifffile.TiffFileError, OSError, EOFError, ValueError, struct.error, KeyError, IndexError,
                 RuntimeError, TypeError, AttributeError, ZeroDivisionError, OverflowError)


def open_tiff(path: Path) -> RawVolume:
    """Open the first series of the TIFF at ``path`` without reading its image data.

    Raises:
        InputError: not a TIFF, truncated or damaged.
    """
    try:
        tif = tifffile.TiffFile(path)
    except _PARSE_ERRORS as err:
        raise InputError(
            f"{path} is not a readable TIFF ({type(err).__name__}: {err}); check that it is a TIFF "
            "file (not renamed from another format) or export it again"
        ) from err
    try:
        return _read_tiff(path, tif)
    except BaseException:
        tif.close()
        raise


def _read_tiff(path: Path, tif: tifffile.TiffFile) -> RawVolume:
    check_ifd_chain(path)
    try:
        series = one_series(path, tif)
        check_data_extent(path, series)
        check_declared_sizes(path, series)
    except _PARSE_ERRORS as err:
        raise InputError(
            f"{path} is a damaged TIFF ({type(err).__name__}: {err}); copy or export it again"
        ) from err
    try:
        spacing, names = tiff_metadata(tif, series)
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as err:
        # Odd metadata should not stop a readable image: say so, carry on without it.
        logger.warning("%s: unreadable voxel size metadata (%s: %s); pass the voxel size (--spacing Z,Y,X)",
                       path, type(err).__name__, err)
        spacing, names = None, []
    try:
        data, closers = _lazy_data(path, tif, series)  # may close ``tif``: metadata are read first
    except _PARSE_ERRORS as err:
        raise InputError(
            f"{path} is a damaged TIFF ({type(err).__name__}: {err}); copy or export it again"
        ) from err
    return RawVolume(data=data, axes=series.axes, spacing=spacing, channel_names=names, closers=closers)


# -- integrity ---------------------------------------------------------------------------------------


def _truncated(path: Path, end: int, size: int) -> InputError:
    return InputError(
        f"{path} is truncated or damaged (it refers to byte {end} but has only {size} bytes); "
        "copy or export it again"
    )


def check_ifd_chain(path: Path) -> None:
    """Walk the chain of image file directories (IFDs) and check it ends inside the file.

    tifffile stops quietly (logging an error) at an IFD offset past the end of the
    file, so a stack cut short would read as a shorter, seemingly valid stack.

    Raises:
        InputError: an IFD lies (partly) past the end of the file, or the chain loops.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 16:
            return  # tifffile already accepted it; not a layout this check knows
        version = struct.unpack(order + "H", head[2:4])[0]
        if version == 42:
            count_fmt, entry_size, offset_fmt, offset = "H", 12, "I", struct.unpack(order + "I", head[4:8])[0]
        elif version == 43:
            count_fmt, entry_size, offset_fmt, offset = "Q", 20, "Q", struct.unpack(order + "Q", head[8:16])[0]
        else:
            return
        count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
        seen: set[int] = set()
        while offset:
            if offset in seen:
                raise InputError(f"{path} is damaged (its IFD chain loops at byte {offset}); export it again")
            seen.add(offset)
            if offset + count_size > size:
                raise _truncated(path, offset + count_size, size)
            fh.seek(offset)
            (count,) = struct.unpack(order + count_fmt, fh.read(count_size))
            next_at = offset + count_size + count * entry_size
            if next_at + offset_size > size:
                raise _truncated(path, next_at + offset_size, size)
            fh.seek(next_at)
            (offset,) = struct.unpack(order + offset_fmt, fh.read(offset_size))


def _describe(series: tifffile.TiffPageSeries) -> str:
    return f"{'x'.join(map(str, series.shape))} {series.dtype}"


def one_series(path: Path, tif: tifffile.TiffFile) -> tifffile.TiffPageSeries:
    """The file's one volume: its single series, whose pages all share one shape and dtype.

    tifffile splits pages of different shapes or dtypes into several series; reading
    the first alone would segment part of the file as if it were all of it.
    Reduced-resolution series (thumbnails, pyramid previews) are not volumes.

    Raises:
        InputError: several full-resolution series, or pages that differ within the series.
    """
    series = [s for s in tif.series if not getattr(s.keyframe, "is_reduced", False)] or list(tif.series)
    if not series:
        raise InputError(f"{path} holds no image; export it again")
    if len(series) > 1:
        kinds = "; ".join(_describe(s) for s in series[:3]) + ("; ..." if len(series) > 3 else "")
        raise InputError(
            f"{path} holds {len(series)} separate images ({kinds}), not one stack; tpem-seg reads one "
            "volume per file: save each as its own file (e.g. Fiji: Image > Stacks > Tools > Make Substack)"
        )
    first = series[0]
    key = first.keyframe
    for page in first.pages:
        if page is None or page is key or not hasattr(page, "shape"):
            continue  # frames (TiffFrame) share their keyframe's layout by construction
        if page.shape != key.shape or page.dtype != key.dtype:
            raise InputError(
                f"{path}: page {page.index} is {'x'.join(map(str, page.shape))} {page.dtype} but the first is "
                f"{'x'.join(map(str, key.shape))} {key.dtype}; save the stack again with one shape and type"
            )
    return first


def check_declared_sizes(path: Path, series: tifffile.TiffPageSeries) -> None:
    """Refuse a decompression bomb before anything is decoded.

    One page is what the lazy reader decodes at once, so one page must fit the read
    limit (:func:`~tpem_seg.io.limits.check_unit`); and no page may declare more decoded
    bytes than its stored bytes can hold under its codec.
    """
    key = series.keyframe
    bits = int(getattr(key, "bitspersample", 8)) or 8
    page_bytes = int(np.prod(key.shape, dtype=np.int64)) * max(bits, 8) // 8
    check_unit(str(path), "a page", page_bytes)
    for page in series.pages:
        if page is None or not hasattr(page, "databytecounts") or not len(page.databytecounts):
            continue
        declared = -(-int(np.prod(page.shape, dtype=np.int64)) * bits // 8)
        check_ratio(str(path), int(page.compression), declared, int(sum(int(n) for n in page.databytecounts)))


def check_data_extent(path: Path, series: tifffile.TiffPageSeries) -> None:
    """Check that every strip/tile of ``series`` lies inside its file.

    Without this, tifffile reads a strip past the end as zeros (or not at all).

    Raises:
        InputError: image data lie past the end of the file.
    """
    if series.dataoffset is not None:
        # Contiguous series (ImageJ, tifffile): only the first IFD may be indexed.
        size = series.parent.filehandle.size
        end = int(series.dataoffset) + int(series.nbytes)
        if end > size:
            raise _truncated(path, end, size)
        return
    for page in series.pages:
        if page is None or not len(page.dataoffsets):
            continue
        size = page.parent.filehandle.size  # OME series may span files
        end = max(int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts))
        if end > size:
            raise _truncated(path, end, size)


# -- data --------------------------------------------------------------------------------------------


def _memmappable(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> bool:
    native = "<" if sys.byteorder == "little" else ">"
    return (series.dataoffset is not None and series.keyframe.is_memmappable
            and tif.byteorder == native and series.keyframe.parent is tif)


def _lazy_data(path: Path, tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> tuple[Any, list]:
    """The series as an unread array-like, and what closes the file behind it."""
    if _memmappable(tif, series):
        data = np.memmap(path, dtype=series.dtype, mode="r", offset=int(series.dataoffset),
                         shape=tuple(series.shape))
        tif.close()  # the memory map keeps its own handle
        return data, []
    import zarr  # heavy import; TIFF-only users of memmaps never pay it (tifffile needs zarr >= 3)

    # One zarr chunk per page: callers read whole planes, and per-strip chunks
    # (e.g. 32 per 512x512 LZW plane) cost zarr overhead each.
    store = series.aszarr(chunkmode="page")
    data = zarr.open(store, mode="r")
    if tuple(data.shape) != tuple(series.shape):
        raise InputError(f"{path}: unexpected layout (store shape {data.shape} vs {series.shape}); "
                         "convert it to a plain TIFF or OME-TIFF")
    return data, [store.close, tif.close]  # closed in this order


# -- metadata ----------------------------------------------------------------------------------------


def tiff_metadata(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> tuple[Spacing | None, list[str]]:
    """Voxel size ``(z, y, x)`` µm (or None) and channel names from OME, ImageJ or shaped metadata."""
    page = series.keyframe
    for kind, reader in (("OME", _ome_metadata), ("ImageJ", _imagej_metadata), ("shaped", _shaped_metadata)):
        found = reader(tif, page)
        if found is not None:
            spacing, names = found
            logger.debug("%s: %s metadata gives voxel size %s µm, channels %s",
                         tif.filename, kind, spacing, names)
            return spacing, names
    xy = resolution_xy_um(page)
    if xy is not None:
        logger.info("%s: pixel size %.4g x %.4g µm (y, x) from resolution tags, but no z step; "
                    "pass the voxel size (--spacing Z,Y,X) to use it", tif.filename, *xy)
    return None, []


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_metadata(tif: tifffile.TiffFile, page: Any) -> tuple[Spacing | None, list[str]] | None:
    if not tif.is_ome or not tif.ome_metadata:
        return None
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except ElementTree.ParseError as err:
        logger.warning("%s: unreadable OME-XML (%s); ignoring it", tif.filename, err)
        return None
    pixels = next((el for el in root.iter() if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return None
    sizes = []
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        factor = um_per_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        sizes.append(None if value is None or factor is None else float(value) * factor)
    names = [el.get("Name", "") for el in pixels if _local(el.tag) == "Channel"]
    return valid_spacing(sizes), names if all(names) else []


def _imagej_metadata(tif: tifffile.TiffFile, page: Any) -> tuple[Spacing | None, list[str]] | None:
    meta = tif.imagej_metadata
    if not tif.is_imagej or meta is None:
        return None
    factor = um_per_unit(meta.get("unit"))
    resolution = page.resolution if "XResolution" in page.tags else None
    if factor is None or not resolution:
        return None, []  # unit "pixel" or none: ImageJ shows pixels, so do we
    x_res, y_res = resolution
    # ImageJ's default voxel depth is 1 unit when "spacing" is absent.
    z = float(meta.get("spacing", 1.0)) * factor
    sizes = (z, factor / y_res if y_res else None, factor / x_res if x_res else None)
    return valid_spacing(sizes), []


def _shaped_metadata(tif: tifffile.TiffFile, page: Any) -> tuple[Spacing | None, list[str]] | None:
    if not tif.is_shaped or not tif.shaped_metadata:
        return None
    meta = tif.shaped_metadata[0]
    spacing = valid_spacing(meta.get(VOXEL_SIZE_KEY))
    names = meta.get("channel_names")
    if not isinstance(names, list):
        # e.g. the cellfinder restack: "channel0", "channel1"...
        names = [meta[f"channel{i}"] for i in range(len(meta)) if f"channel{i}" in meta]
    return spacing, [str(n) for n in names]


def resolution_xy_um(page: Any) -> tuple[float, float] | None:
    """Pixel size ``(y, x)`` in µm from the TIFF resolution tags, None when they carry none.

    Unitless resolutions (ResolutionUnit NONE) and the display defaults of image
    software (72 dpi...) are not pixel sizes.
    """
    if "XResolution" not in page.tags or "YResolution" not in page.tags:
        return None
    unit = {2: "inch", 3: "cm", 4: "mm", 5: "um"}.get(int(page.resolutionunit))
    x_res, y_res = (float(r) for r in page.resolution)
    if unit is None or x_res <= 0 or y_res <= 0:
        return None
    if unit == "inch" and x_res in _DEFAULT_DPI and y_res in _DEFAULT_DPI:
        return None
    factor = um_per_unit(unit)
    assert factor is not None
    return factor / y_res, factor / x_res
