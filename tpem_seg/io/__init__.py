"""Volume I/O: read any supported microscopy file lazily, write results streaming.

- :func:`read_volume` opens TIFF (plain, ImageJ, OME, compressed, BigTIFF), ``.npy``
  and zarr/OME-Zarr as a :class:`Volume` whose data are read plane by plane.
- :func:`open_writer` streams z-slabs into ``.tif`` (ImageJ hyperstack), ``.npy``
  or ``.zarr`` (OME-Zarr); the file appears under its name only when complete.
- :func:`write_volume` writes a whole array through the same writer.
"""

from tpem_seg.io.readers import read_volume
from tpem_seg.io.volume import Volume
from tpem_seg.io.writers import VolumeWriter, open_writer, write_volume

__all__ = ["Volume", "read_volume", "write_volume", "open_writer", "VolumeWriter"]
