"""``convert``: any readable volume into another format, plane by plane (memory bounded by a slab).

Its use: a TIFF stack into OME-Zarr, whose chunks distributed workers read by region (a TIFF can
only be read by whole planes). Reading and writing are the readers' and the one writer's own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from tpem_seg.io.readers import read_volume
from tpem_seg.io.writers import write_volume


def convert_volume(src: str | os.PathLike, dst: str | os.PathLike, axes: str | None = None,
                   spacing: Sequence[float] | None = None, compression: str | None = None) -> Path:
    """Write the volume at ``src`` to ``dst`` (``.zarr``, ``.tif``, ``.npy``) with its voxel size and
    channel names; ``axes`` and ``spacing`` (z, y, x µm) override the file's as for
    :func:`~tpem_seg.io.read_volume`. Returns the written path."""
    volume = read_volume(src, axes=axes, spacing=spacing)
    try:
        names = volume.channel_names if "C" in volume.axes and len(volume.channel_names) == volume.n_channels else None
        return write_volume(dst, volume.data, volume.axes, volume.spacing, names, compression)
    finally:
        volume.data.close()
