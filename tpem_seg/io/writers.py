"""Writing volumes: streaming z-slab writers for ``.tif``, ``.npy`` and ``.zarr``.

A writer receives successive z-slabs, ``(dz, Y, X)`` for ``ZYX`` labels or
``(C, dz, Y, X)`` for ``CZYX`` class probabilities, so memory stays bounded by a
slab. It writes to a hidden temporary name in the output folder
(``.NAME.partial-XXXXXXXX``) and renames it to ``NAME`` only in :meth:`commit`:
an interrupted run never leaves a file that looks complete.

Formats:

- ``.tif/.tiff``: uint8, uint16 and float32 become ImageJ hyperstacks (pages in
  ImageJ's ``ZCYX`` order) with the voxel size as ImageJ ``spacing``/``unit=um``
  and resolution tags in pixels per µm, so Fiji, napari-tiff and tifffile show the
  right scale; channels (class probabilities) are a composite with a colour, a
  display range and, as plane labels, the channel names. float16 is written as
  float32 (ImageJ holds no float16). Uncompressed files are written contiguously;
  past 4 GB tifffile then keeps ImageJ's own large-file layout (classic TIFF, one
  IFD, data contiguous), which Fiji opens, rather than BigTIFF, which Fiji's ImageJ
  reader cannot. Compressed files are written page by page with the same ImageJ
  metadata; so are dtypes ImageJ cannot hold (int32...), as a plain TIFF with a
  tifffile "shaped" JSON description (axes ``ZCYX``, voxel size) and resolution in
  pixels per cm, with a warning. Page-by-page files become BigTIFF past ~4 GB.
- ``.npy``: ``numpy.lib.format.open_memmap``, plus ``NAME.npy.json`` holding axes,
  voxel size, channel names and label names (``.npy`` itself cannot).
- ``.zarr``: an OME-Zarr 0.5 image (zarr v3, arrays with ``dimension_names``,
  ``multiscales`` with units and the voxel size as scale, optionally a pyramid of
  y/x-halved levels). Label images are NGFF image-labels (a colour and a class name
  per value), multi-channel images carry ``omero`` channels (name, colour, window).
  Chunks of a few planes, Zstd-compressed.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from tpem_seg.errors import OutputError
from tpem_seg.io._lazy import page_releaser
from tpem_seg.io._meta import VOXEL_SIZE_KEY, Spacing, class_rgb, valid_spacing
from tpem_seg.io._zarr import is_zarr_folder, level_shape, ome_attributes
from tpem_seg.io.pyramid import box_index, fill_levels, halve_yx
from tpem_seg.io.space import check_free_space, disk_full_error, is_disk_full
from tpem_seg.util.partials import OutputLock
from tpem_seg.io.readers import sidecar_path
from tpem_seg.util import atomic

logger = logging.getLogger(__name__)

#: Key of a label image's class names (JSON list) in ImageJ properties and the ``.npy`` sidecar.
LABEL_NAMES_KEY = "label_names"
#: Key of a writer's text ``properties`` in the ``.npy`` sidecar and the zarr group's attributes
#: (TIFF: ImageJ image properties, each key on its own).
PROPERTIES_KEY = "properties"

#: Data types ImageJ can hold in a hyperstack.
IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

#: Above this many bytes of image data a page-by-page TIFF is written as BigTIFF
#: (tifffile's own threshold: 4 GiB less room for IFDs and metadata).
BIGTIFF_THRESHOLD = 2**32 - 2**25

#: Target size of one zarr chunk: a few planes, small enough for fast random access.
ZARR_CHUNK_BYTES = 8 * 2**20

#: Slab size :func:`write_volume` feeds the writer.
SLAB_BYTES = 64 * 2**20

_TIFF_CODECS = {"zlib": "zlib", "deflate": "zlib", "lzw": "lzw", "zstd": "zstd", "none": None}
_ZARR_CODECS = ("zstd", "zlib", "deflate", "blosc", "none")


class VolumeWriter:
    """Streams a volume to ``path`` in z-slabs; publishes it atomically on :meth:`commit`.

    Use :func:`open_writer` to make one. As a context manager it commits on a clean
    exit and aborts (removing the temporary file) on any exception, including
    ``KeyboardInterrupt``.

    Attributes:
        path: the final output path.
        shape: ``(Z, Y, X)`` or ``(C, Z, Y, X)`` in voxels.
        dtype: data type written (blocks are cast to it).
        axes: ``"ZYX"`` or ``"CZYX"``.
        spacing: voxel size ``(z, y, x)`` in µm, or None.
        channel_names: one name per channel (class names for probabilities), or empty.
        label_names: for a label image, the class name of each value 0..K-1; else empty.
        levels: pyramid levels written (zarr; 1 elsewhere).
        properties: text key-value metadata (e.g. what an uncertainty map measures), or empty.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str,
                 spacing: Spacing | None, channel_names: list[str], compression: str | None,
                 label_names: list[str] | None = None, levels: int = 1,
                 properties: dict[str, str] | None = None) -> None:
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self.axes = axes
        self.spacing = spacing
        self.channel_names = channel_names
        self.compression = compression
        self.label_names = label_names or []
        self.levels = levels
        self.properties = dict(properties or {})
        self._z = 0
        self._block_voxels = 0
        self._state = "open"
        self._temps: list[tuple[Path, Path]] = []  # (temporary, final), published in this order
        self._lock = OutputLock(path)
        try:
            self._lock.acquire()  # before _reserve cleans up: a live writer's temporaries are its own
            self._open()
        except OSError as err:
            self._remove_temps()
            self._lock.release()
            if is_disk_full(err, path.absolute().parent, self.nbytes):
                raise disk_full_error(path, self.nbytes) from err
            raise OutputError(f"cannot create {path} ({err.strerror or err}); "
                              "check the folder's permissions and free space") from err
        except BaseException:
            self._remove_temps()
            self._lock.release()
            raise

    # -- geometry ----------------------------------------------------------------------------------

    @property
    def n_channels(self) -> int:
        return self.shape[0] if self.axes == "CZYX" else 1

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return self.shape[-3:]  # type: ignore[return-value]

    @property
    def z_written(self) -> int:
        """Planes written so far."""
        return self._z

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    # -- public protocol ---------------------------------------------------------------------------

    #: Whether :meth:`write_block` may put boxes anywhere, in any order (chunked formats); the
    #: others take z-slabs in order.
    takes_blocks = False

    def write(self, block: Any) -> None:
        """Append the next z-slab: ``(dz, Y, X)`` for ZYX, ``(C, dz, Y, X)`` for CZYX.

        Raises:
            ValueError: wrong shape, a dtype that cannot be cast safely, or past the last plane.
            OutputError: the disk refused the data (full, removed...).
        """
        self._check_open()
        slab = self._as_czyx(np.asarray(block))
        dz = slab.shape[1]
        if self._z + dz > self.shape_zyx[0]:
            raise ValueError(f"slab of {dz} planes at z={self._z} overruns the {self.shape_zyx[0]} planes "
                             f"of {self.path}")
        self._guarded(self._write_slab, slab, self._z)
        self._z += dz

    def write_block(self, core: Sequence[tuple[int, int]], block: Any) -> None:
        """Write the box ``core`` (``(lo, hi)`` per axis z, y, x): ``(dz, dy, dx)`` for ZYX,
        ``(C, dz, dy, dx)`` for CZYX. Instead of :meth:`write`, where :attr:`takes_blocks`: every voxel
        once, boxes in any order; the output is complete when they cover the volume.

        Raises:
            ValueError: a box outside the volume or of another shape than ``block``, or a format
                that takes z-slabs only.
            OutputError: the disk refused the data.
        """
        self._check_open()
        if not self.takes_blocks:
            raise ValueError(f"{self.path}: this format is written in z-slabs (write), not in blocks")
        box = tuple((int(lo), int(hi)) for lo, hi in core)
        data = self._as_czyx(np.asarray(block), box)
        if any(lo < 0 or hi > n for (lo, hi), n in zip(box, self.shape_zyx)):
            raise ValueError(f"block {box} lies outside the {self.shape_zyx} voxels of {self.path}")
        self._guarded(self._write_box, data, box)
        self._block_voxels += int(np.prod(data.shape[1:]))

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"the writer for {self.path} is already {self._state}")

    def _guarded(self, write: Any, *args: Any) -> None:
        """``write(*args)``, a disk's refusal turned into OutputError."""
        try:
            write(*args)
        except OSError as err:
            if is_disk_full(err, self.path.absolute().parent, self.nbytes):
                raise disk_full_error(self.path, self.nbytes) from err
            raise OutputError(f"cannot write {self.path} ({err.strerror or err}); "
                              "check free disk space and that the folder still exists") from err

    def commit(self) -> Path:
        """Finish the file and rename it to its final name; returns that path.

        On any failure the temporary file is removed and the error re-raised.
        """
        if self._state == "committed":
            return self.path
        if self._state != "open":
            raise RuntimeError(f"the writer for {self.path} was aborted")
        try:
            voxels = int(np.prod(self.shape_zyx))
            if self._block_voxels and self._block_voxels != voxels:
                raise ValueError(f"blocks of {self._block_voxels} of {voxels} voxels were written to {self.path}")
            if not self._block_voxels and self._z != self.shape_zyx[0]:
                raise ValueError(f"only {self._z} of {self.shape_zyx[0]} planes were written to {self.path}")
            self._finish()
            self._publish()
        except OSError as err:
            self.abort()
            if is_disk_full(err, self.path.absolute().parent, self.nbytes):
                raise disk_full_error(self.path, self.nbytes) from err
            raise OutputError(f"cannot finish {self.path} ({err.strerror or err}); "
                              "check free disk space and permissions") from err
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self._lock.release()
        logger.info("wrote %s: %s %s %s, voxel size %s µm", self.path, self.axes, self.shape, self.dtype,
                    self.spacing)
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the temporary file(s); the final name is left untouched."""
        if self._state != "open":
            return
        self._state = "aborted"
        try:
            self._discard()
        except OSError as err:  # e.g. a full disk refusing the final IFD: the file goes anyway
            logger.debug("closing the partial output of %s failed (%s)", self.path, err, exc_info=True)
        except Exception:  # cleanup after a failure: report, keep removing
            logger.warning("closing the partial output of %s failed", self.path, exc_info=True)
        self._remove_temps()
        self._lock.release()
        logger.debug("aborted %s; partial output removed", self.path)

    def __enter__(self) -> "VolumeWriter":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- what each format does ---------------------------------------------------------------------

    def _open(self) -> None:
        """Create the temporary output (via :meth:`_reserve`) and open it."""
        raise NotImplementedError

    def _write_slab(self, slab: np.ndarray, z0: int) -> None:
        """Write ``slab`` ``(C, dz, Y, X)`` (C=1 for ZYX) at planes ``z0:z0+dz``."""
        raise NotImplementedError

    def _write_box(self, data: np.ndarray, box: tuple[tuple[int, int], ...]) -> None:
        """Write ``data`` ``(C, dz, dy, dx)`` at the voxels ``box`` (formats that take blocks)."""
        raise NotImplementedError

    def _finish(self) -> None:
        """Flush and close: the output is complete under its temporary name(s)."""
        raise NotImplementedError

    def _discard(self) -> None:
        """Close without finishing (the temporary files are removed afterwards)."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------------

    def _as_czyx(self, block: np.ndarray, box: tuple[tuple[int, int], ...] | None = None) -> np.ndarray:
        """``block`` checked against the writer's shape (a slab of whole planes, or the voxels of
        ``box``) and dtype, as ``(C, dz, Y, X)``."""
        expected_ndim = len(self.axes)
        tail = self.shape_zyx[1:] if box is None else tuple(hi - lo for lo, hi in box)
        head_ok = self.axes == "ZYX" or (block.ndim == 4 and block.shape[0] == self.shape[0])
        fits = tuple(block.shape[-2:]) == tuple(tail[-2:]) and (box is None or block.shape[-3] == tail[0])
        if block.ndim != expected_ndim or not fits or not head_ok:
            want = ("(dz, Y, X)" if self.axes == "ZYX" else "(C, dz, Y, X)") if box is None else f"box {box}"
            raise ValueError(f"block of shape {block.shape} does not fit {self.path}: expected {want} "
                             f"with {self.axes} shape {self.shape}")
        if block.dtype != self.dtype:
            block = self._cast(block)
        return block[np.newaxis] if self.axes == "ZYX" else block

    def _cast(self, block: np.ndarray) -> np.ndarray:
        """``block`` as the writer's dtype; refuses casts that would change values silently."""
        integers = block.dtype.kind in "iub" and self.dtype.kind in "iu"
        if not (integers or np.can_cast(block.dtype, self.dtype, casting="same_kind")):
            # e.g. float probabilities into uint8: the caller must scale them first.
            raise ValueError(f"cannot write {block.dtype} data to {self.path} of dtype {self.dtype}")
        if integers and not np.can_cast(block.dtype, self.dtype) and block.size:
            info = np.iinfo(self.dtype)
            if block.min() < info.min or block.max() > info.max:
                raise ValueError(f"values {block.min()}..{block.max()} do not fit {self.dtype} of {self.path}")
        return block.astype(self.dtype)

    def _reserve(self, final: Path, folder: bool = False) -> Path:
        """Create a hidden temporary file (or folder) next to ``final`` and register it."""
        temp = atomic.temp_path(final, folder)
        self._temps.append((temp, final))
        return temp

    def _publish(self) -> None:
        """Rename every temporary to its final name (the main output last)."""
        published: list[Path] = []
        try:
            for temp, final in self._temps:
                atomic.replace(temp, final)
                published.append(final)
        except BaseException:
            for final in published:  # e.g. a sidecar without its array
                atomic.remove(final)
            raise
        self._temps = []

    def _remove_temps(self) -> None:
        for temp, _ in self._temps:
            try:
                atomic.remove(temp)
            except OSError:
                logger.warning("could not remove the partial output %s", temp, exc_info=True)
        self._temps = []


# -- TIFF ------------------------------------------------------------------------------------------


class TiffVolumeWriter(VolumeWriter):
    """ImageJ hyperstack (uint8/uint16/float32) or plain tifffile TIFF, pages in ``ZCYX`` order."""

    def _open(self) -> None:
        import tifffile

        self._temp = self._reserve(self.path)
        codec = _tiff_codec(self.compression, self.path)
        self._imagej = self.dtype in IMAGEJ_DTYPES
        self._contiguous = self._imagej and codec is None
        if not self._imagej:
            logger.warning(
                "%s: Fiji/ImageJ cannot open %s TIFFs (napari and tifffile can); write .zarr or .npy "
                "instead for Fiji", self.path, self.dtype)
        bigtiff = not self._contiguous and self.nbytes > BIGTIFF_THRESHOLD
        if bigtiff and self._imagej:
            logger.warning("%s: compressed data over 4 GB go to a BigTIFF, which Fiji opens only through "
                           "Bio-Formats; write it uncompressed for Fiji's own reader", self.path)
        self._tiff = tifffile.TiffWriter(self._temp, bigtiff=bigtiff, imagej=self._contiguous, shaped=False)
        self._kwargs = self._contiguous_kwargs() if self._contiguous else self._page_kwargs(codec)
        self._description: str | None = None if self._contiguous else self._page_description()
        tags = self._imagej_tags() if self._imagej and not self._contiguous else {}
        self._first_tags = list(tifffile.imagej_metadata_tag(tags, "<")) if tags else []

    def _imagej_metadata(self) -> dict[str, Any]:
        """ImageJ description entries: z spacing and unit; composite display for channels."""
        meta: dict[str, Any] = {}
        if self.spacing is not None:
            meta.update(spacing=self.spacing[0], unit="um")
        if self.axes == "CZYX":
            meta["mode"] = "composite"
        return meta

    def _imagej_tags(self) -> dict[str, Any]:
        """ImageJ's own tag entries: label names of a label image; for channels display ranges,
        colours, and names as plane labels.

        ImageJ keeps channel names only as per-plane labels (``ZCYX`` order); Fiji shows
        them for each plane.
        """
        if self.label_names:  # ImageJ keeps them as an image property; tpem-seg's napari reader reads them
            return {"Properties": {**self.properties, LABEL_NAMES_KEY: json.dumps(self.label_names)}}
        if self.axes != "CZYX":
            return {"Properties": dict(self.properties)} if self.properties else {}
        top = float(np.iinfo(self.dtype).max) if self.dtype.kind in "iu" else 1.0
        ramp = np.arange(256, dtype=np.float32) / 255
        luts = [np.round(np.outer(class_rgb(c), ramp)).astype(np.uint8) for c in range(self.n_channels)]
        tags: dict[str, Any] = {"Ranges": (0.0, top) * self.n_channels, "LUTs": luts}
        if self.channel_names:
            tags["Labels"] = list(self.channel_names) * self.shape_zyx[0]
        return tags

    def _contiguous_kwargs(self) -> dict[str, Any]:
        # No 'axes': tifffile derives the ImageJ shape from the accumulated (Z, C, Y, X)
        # units at close, which maps to ImageJ's TZCYXS with T=1 (also for C=1).
        kwargs: dict[str, Any] = {"contiguous": True, "photometric": "minisblack",
                                  "metadata": {**self._imagej_metadata(), **self._imagej_tags()}}
        if self.spacing is not None:
            kwargs["resolution"] = (1.0 / self.spacing[2], 1.0 / self.spacing[1])  # pixels per µm
        return kwargs

    def _page_kwargs(self, codec: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"photometric": "minisblack", "compression": codec, "metadata": None}
        if self.spacing is not None:
            if self._imagej:  # ImageJ reads pixels per `unit` from a unitless resolution
                kwargs.update(resolution=(1.0 / self.spacing[2], 1.0 / self.spacing[1]), resolutionunit="NONE")
            else:
                kwargs.update(resolution=(1e4 / self.spacing[2], 1e4 / self.spacing[1]),
                              resolutionunit="CENTIMETER")
        return kwargs

    def _page_axes_shape(self) -> tuple[str, tuple[int, ...]]:
        z, y, x = self.shape_zyx
        if self.axes == "CZYX":
            return "ZCYX", (z, self.n_channels, y, x)
        return "ZYX", (z, y, x)

    def _page_description(self) -> str:
        """First-page description of a page-by-page file: ImageJ header or tifffile shaped JSON."""
        import tifffile

        axes, shape = self._page_axes_shape()
        if self._imagej:
            return tifffile.imagej_description(shape, axes=axes, **self._imagej_metadata())
        meta: dict[str, Any] = {"shape": list(shape), "axes": axes}
        if self.spacing is not None:
            meta[VOXEL_SIZE_KEY] = list(self.spacing)
        if self.channel_names:
            meta["channel_names"] = list(self.channel_names)
        return json.dumps(meta)

    def _write_slab(self, slab: np.ndarray, z0: int) -> None:
        for dz in range(slab.shape[1]):
            if self._contiguous:
                self._tiff.write(slab[:, dz], **self._kwargs)  # one (C, Y, X) unit per plane
                continue
            for c in range(slab.shape[0]):
                self._tiff.write(slab[c, dz], description=self._description, extratags=self._first_tags,
                                 **self._kwargs)
                self._description, self._first_tags = None, []  # only the first page carries them

    def _finish(self) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._tiff.close()
        for warning in caught:
            if "truncating ImageJ file" in str(warning.message):
                logger.info("%s exceeds 4 GB: written in ImageJ's large-file layout (one IFD, contiguous "
                            "data), which Fiji and tifffile read", self.path)
            else:
                logger.warning("%s: %s", self.path, warning.message)

    def _discard(self) -> None:
        self._tiff.close()


def _tiff_codec(compression: str | None, path: Path) -> str | None:
    if compression is None:
        return None
    if compression not in _TIFF_CODECS:
        raise OutputError(f"unknown TIFF compression {compression!r} for {path}; use one of "
                          f"{', '.join(_TIFF_CODECS)}")
    if compression == "zstd":
        logger.info("%s: Fiji's TIFF reader cannot decode zstd; use zlib for Fiji", path)
    return _TIFF_CODECS[compression]


# -- npy -------------------------------------------------------------------------------------------


class NpyVolumeWriter(VolumeWriter):
    """Memory-mapped ``.npy`` in the writer's axes order, plus a ``NAME.npy.json`` sidecar."""

    def _open(self) -> None:
        if self.compression not in (None, "none"):
            raise OutputError(f"{self.path}: .npy cannot be compressed; write .zarr or .tif for compression")
        sidecar = self._reserve(sidecar_path(self.path))  # published before the array
        meta = {"axes": self.axes, VOXEL_SIZE_KEY: list(self.spacing) if self.spacing else None,
                "channel_names": list(self.channel_names)}
        if self.label_names:
            meta[LABEL_NAMES_KEY] = list(self.label_names)
        if self.properties:
            meta[PROPERTIES_KEY] = dict(self.properties)
        sidecar.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        temp = self._reserve(self.path)
        self._array: np.memmap | None = np.lib.format.open_memmap(temp, mode="w+", dtype=self.dtype,
                                                                   shape=self.shape)
        self._release_pages = page_releaser(self._array) or (lambda: None)

    def _write_slab(self, slab: np.ndarray, z0: int) -> None:
        assert self._array is not None
        z1 = z0 + slab.shape[1]
        if self.axes == "ZYX":
            self._array[z0:z1] = slab[0]
        else:
            self._array[:, z0:z1] = slab
        # Hand dirty pages to the OS now and drop them from our resident set, so
        # memory stays bounded by a slab (flushed pages would otherwise stay mapped).
        self._array.flush()
        self._release_pages()

    def _finish(self) -> None:
        assert self._array is not None
        self._array.flush()
        self._array = None  # drops the map (numpy has no public close)

    def _discard(self) -> None:
        self._array = None


# -- zarr ------------------------------------------------------------------------------------------


class ZarrVolumeWriter(VolumeWriter):
    """OME-Zarr 0.5 image (zarr v3): arrays ``0``, ``1``... (pyramid levels) in the writer's axes.

    Labels (``label_names`` given) are an NGFF image-label: viewers such as
    napari-ome-zarr open them as a labels layer with one colour per class.
    """

    takes_blocks = True

    def _open(self) -> None:
        temp = self._folder = self._reserve(self.path, folder=True)
        self._chunks = zarr_chunks(self.shape, self.dtype)
        self._arrays = create_zarr_image(temp, self.path, self.shape, self.dtype, self.axes, self.spacing,
                                         self.channel_names, self.label_names, self._chunks, self.compression,
                                         self.levels, self.properties)
        self._pending: list[np.ndarray] = []
        self._pending_z0 = 0

    def _write_slab(self, slab: np.ndarray, z0: int) -> None:
        # Write whole chunks only: a chunk written in two parts would be read back and rewritten.
        self._pending.append(slab)
        if sum(p.shape[1] for p in self._pending) >= self._chunks[-3]:
            self._flush(everything=False)

    def _flush(self, everything: bool) -> None:
        held = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        depth = self._chunks[-3]
        n = held.shape[1] if everything else held.shape[1] // depth * depth
        z0 = self._pending_z0
        level_slab = held[:, :n]
        for level, array in enumerate(self._arrays):
            if level:
                level_slab = halve_yx(level_slab, labels=bool(self.label_names))
            if self.axes == "ZYX":
                array[z0:z0 + n] = level_slab[0]
            else:
                array[:, z0:z0 + n] = level_slab
        self._pending = [held[:, n:].copy()] if n < held.shape[1] else []
        self._pending_z0 = z0 + n

    def _write_box(self, data: np.ndarray, box: tuple[tuple[int, int], ...]) -> None:
        # level 0 only: the levels above are filled from it once every block is in (_finish)
        ndim = len(self.axes)
        self._arrays[0][box_index(box, ndim)] = data if ndim == 4 else data[0]

    def _finish(self) -> None:
        if self._pending:
            self._flush(everything=True)
        if self._block_voxels:
            fill_levels(self._folder, self.levels, labels=bool(self.label_names))

    def _discard(self) -> None:
        self._pending = []


def create_zarr_image(folder: Path, final: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str,
                      spacing: Spacing | None, channel_names: Sequence[str], label_names: Sequence[str],
                      chunks: tuple[int, ...], compression: str | None = None, levels: int = 1,
                      properties: Mapping[str, str] | None = None) -> list[Any]:
    """Lay out an empty OME-Zarr 0.5 image in ``folder`` (to be published as ``final``): arrays ``0``,
    ``1``... (pyramid levels, y/x halved) of ``shape`` in ``axes`` with ``chunks`` (clipped per level)
    and fill value 0, the NGFF metadata and the writer's text ``properties``. Returns the level
    arrays, open for writing.

    The streaming writer fills them slab by slab; a distributed run
    (:mod:`tpem_seg.distributed`) has its workers fill level 0 chunk by chunk.
    """
    import zarr

    compressors = _zarr_compressor(compression, final)
    group = zarr.open_group(str(folder), mode="w", zarr_format=3)
    names = ["c", "z", "y", "x"] if axes == "CZYX" else ["z", "y", "x"]
    arrays = []
    for level in range(levels):
        level_dims = level_shape(shape, level)
        level_chunks = tuple(min(c, n) for c, n in zip(chunks, level_dims))
        arrays.append(group.create_array(str(level), shape=level_dims, chunks=level_chunks, dtype=dtype,
                                         compressors=compressors, fill_value=0, dimension_names=names))
    group.attrs.update(ome_attributes(final.name.split(".")[0], axes, shape, dtype, spacing, channel_names,
                                      label_names, levels))
    if properties:
        group.attrs[PROPERTIES_KEY] = dict(properties)
    return arrays


def zarr_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """Chunks of a few whole planes (tiles of at most 1024² in y/x), about ``ZARR_CHUNK_BYTES``."""
    z, y, x = shape[-3:]
    cy, cx = min(y, 1024), min(x, 1024)
    cz = int(max(1, min(z, 64, ZARR_CHUNK_BYTES // (cy * cx * dtype.itemsize))))
    return (1, cz, cy, cx) if len(shape) == 4 else (cz, cy, cx)


def _zarr_compressor(compression: str | None, path: Path) -> Any:
    from zarr import codecs

    if compression in (None, "zstd"):
        return codecs.ZstdCodec(level=3)
    if compression in ("zlib", "deflate"):
        return codecs.GzipCodec(level=6)  # zarr v3 has gzip (zlib's deflate), not bare zlib
    if compression == "blosc":
        return codecs.BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")
    if compression == "none":
        return None
    raise OutputError(f"unknown zarr compression {compression!r} for {path}; use one of {', '.join(_ZARR_CODECS)}")


# -- entry points ----------------------------------------------------------------------------------

_WRITERS: dict[str, type[VolumeWriter]] = {
    ".tif": TiffVolumeWriter, ".tiff": TiffVolumeWriter, ".npy": NpyVolumeWriter, ".zarr": ZarrVolumeWriter,
}


def _writer_class(path: Path) -> type[VolumeWriter]:
    name = path.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        raise OutputError(f"{path}: writing OME-TIFF is not supported; name the output .tif "
                          "(an ImageJ hyperstack) or .zarr (OME-Zarr)")
    try:
        return _WRITERS[path.suffix.lower()]
    except KeyError:
        raise OutputError(f"unsupported output type {path.suffix or '(no extension)'!r} for {path}; "
                          "name it .tif, .npy or .zarr") from None


def _check_destination(path: Path, folder_output: bool) -> None:
    """The output folder exists and is writable; an existing output can be replaced."""
    parent = path.absolute().parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a folder"
        raise OutputError(f"output folder {parent} {what}; create it first (mkdir -p {parent}) "
                          "or choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {parent} is not writable; choose another output path "
                          "or fix the folder's permissions")
    if folder_output and path.exists() and not is_zarr_folder(path):
        raise OutputError(f"{path} exists and is not a zarr store; remove it or choose another name")
    if not folder_output and path.is_dir():
        raise OutputError(f"{path} is a folder; choose a file name for the output")


def _checked_args(shape: Sequence[int], dtype: Any, axes: str, spacing: Sequence[float] | None,
                  channel_names: Sequence[str] | None) -> tuple[tuple[int, ...], np.dtype, str,
                                                            Spacing | None, list[str]]:
    axes = axes.upper()
    if axes not in ("ZYX", "CZYX"):
        raise ValueError(f"writer axes must be ZYX or CZYX, not {axes!r}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != len(axes) or min(shape) < 1:
        raise ValueError(f"shape {shape} does not fit axes {axes} (one positive size per axis)")
    checked_spacing = None if spacing is None else valid_spacing(spacing)
    if spacing is not None and checked_spacing is None:
        raise ValueError(f"voxel size {spacing} must be three positive numbers z, y, x in µm")
    names = [str(n) for n in channel_names or []]
    n_channels = shape[0] if axes == "CZYX" else 1
    if names and len(names) != n_channels:
        raise ValueError(f"{len(names)} channel names for {n_channels} channel(s)")
    return shape, np.dtype(dtype), axes, checked_spacing, names


def open_writer(path: str | os.PathLike, shape: Sequence[int], dtype: Any, axes: str,
                spacing: Sequence[float] | None = None, channel_names: Sequence[str] | None = None,
                compression: str | None = None, label_names: Sequence[str] | None = None,
                levels: int = 1, properties: Mapping[str, str] | None = None) -> VolumeWriter:
    """Open a streaming writer for ``path`` (``.tif/.tiff``, ``.npy`` or ``.zarr``).

    Args:
        path: final output path; an existing output there is replaced on commit.
        shape: ``(Z, Y, X)`` for ``axes="ZYX"`` or ``(C, Z, Y, X)`` for ``"CZYX"``.
        dtype: e.g. uint8 labels, float16 or uint8 probabilities.
        axes: ``"ZYX"`` or ``"CZYX"`` (C = class or channel).
        spacing: voxel size ``(z, y, x)`` in µm stored in the file, or None.
        channel_names: one per channel (class names), stored where the format allows.
        compression: None (TIFF/npy: none; zarr: zstd) or ``"zlib"``, ``"lzw"`` (TIFF),
            ``"zstd"``, ``"blosc"`` (zarr), ``"none"``.
        label_names: marks a ``ZYX`` integer output as a label image and names the class
            of each value 0..K-1 (OME-Zarr image-label; ``.npy`` sidecar).
        levels: OME-Zarr pyramid levels (level n halves y and x n times); other formats: 1.
        properties: text key-value metadata stored with the data: ImageJ image properties (TIFF),
            the ``.npy`` sidecar's and the zarr group's ``properties``.

    Returns:
        A :class:`VolumeWriter`; feed it z-slabs in order with ``write`` and ``commit``
        (or use it as a context manager).

    Raises:
        OutputError: unsupported extension, missing or read-only folder, an existing
            non-zarr folder in the way, unknown compression.
        ValueError: inconsistent shape, axes, voxel size or channel names.
    """
    path = Path(path).expanduser()
    cls = _writer_class(path)
    checked = _checked_args(shape, dtype, axes, spacing, channel_names)
    if cls is TiffVolumeWriter and checked[1] == np.float16:
        # Fiji and napari-tiff read scale and channels from ImageJ hyperstacks, which hold
        # float32 but not float16: twice the bytes, but a file every viewer reads right.
        logger.info("%s: float16 data are written as a float32 ImageJ hyperstack", path)
        checked = (checked[0], np.dtype(np.float32), *checked[2:])
    names = _checked_label_names(label_names, checked[1], checked[2])
    if levels < 1 or (levels > 1 and cls is not ZarrVolumeWriter):
        raise OutputError(f"{path}: {levels} pyramid levels; use levels=1, or more only for .zarr outputs")
    compression = None if compression is None else str(compression).lower()
    _check_destination(path, folder_output=cls is ZarrVolumeWriter)
    if cls is NpyVolumeWriter or (cls is TiffVolumeWriter and compression in (None, "none")):
        # Uncompressed: the size is known, so a disk too small is refused before the run.
        check_free_space(path, int(np.prod(checked[0], dtype=np.int64)) * checked[1].itemsize)
    props = {str(k): str(v) for k, v in (properties or {}).items()}
    return cls(path, *checked, compression=compression, label_names=names, levels=levels, properties=props)


def _checked_label_names(label_names: Sequence[str] | None, dtype: np.dtype, axes: str) -> list[str]:
    names = [str(n) for n in label_names or []]
    if names and (axes != "ZYX" or dtype.kind not in "iu"):
        raise ValueError(f"label names are for ZYX integer label images, not {axes} {dtype}")
    return names


def write_volume(path: str | os.PathLike, data: Any, axes: str, spacing: Sequence[float] | None = None,
                 channel_names: Sequence[str] | None = None, compression: str | None = None,
                 label_names: Sequence[str] | None = None, levels: int = 1) -> Path:
    """Write a whole array to ``path`` through :func:`open_writer`, slab by slab.

    Args:
        data: array-like with numpy slicing, e.g. ``(Z, Y, X)`` or ``(C, Z, Y, X)``.
        axes: its axes, any order of ``ZYX`` or ``CZYX`` (``"ZCYX"`` is transposed on the fly).
        spacing, channel_names, compression, label_names, levels: as for :func:`open_writer`.

    Returns:
        The written path.
    """
    axes = axes.upper()
    if sorted(axes) not in (sorted("ZYX"), sorted("CZYX")) or len(axes) != len(data.shape):
        raise ValueError(f"axes {axes!r} must be an order of ZYX or CZYX, one letter per dimension "
                         f"of shape {tuple(data.shape)}")
    out_axes = "CZYX" if "C" in axes else "ZYX"
    order = [axes.index(a) for a in out_axes]
    shape = tuple(int(data.shape[i]) for i in order)
    depth = shape[-3]
    plane_bytes = int(np.prod(shape, dtype=np.int64)) // depth * np.dtype(data.dtype).itemsize
    step = max(1, SLAB_BYTES // max(plane_bytes, 1))
    z_axis = axes.index("Z")
    with open_writer(path, shape, data.dtype, out_axes, spacing, channel_names, compression,
                     label_names=label_names, levels=levels) as writer:
        for z0 in range(0, depth, step):
            index = tuple(slice(z0, z0 + step) if i == z_axis else slice(None) for i in range(len(axes)))
            writer.write(np.transpose(np.asarray(data[index]), order))
    return writer.path
