"""The block store: an OME-Zarr output filled chunk by chunk by many workers, with done-markers.

Layout, under the output's resumable partial name (``.NAME.partial-resumable``, see
:mod:`tpem_seg.util.partials`) until every block is done::

    0/                     level 0 of the OME-Zarr 0.5 image (tpem_seg.io's one writer lays it out)
    .tpem-run/manifest.json  the run manifest (kept in the published output: its provenance)
    .tpem-run/done/KKKK/I.json  block I is written (KKKK = I // 1000: no folder of millions)

A block's core is a whole number of the array's chunks (:func:`chunks_for`), so no two blocks write
the same chunk: there is no read-modify-write between workers, and a retried block rewrites exactly
what it wrote before. Chunks equal to the fill value are not stored (zarr's empty chunks), and zarr
writes each chunk to a temporary name and renames it. A block writes all its chunks, then its
marker (atomically): a marker means the block's chunks are complete.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tpem_seg.errors import OutputError
from tpem_seg.io.pyramid import box_index
from tpem_seg.io.writers import create_zarr_image, zarr_chunks
from tpem_seg.runtime.pipeline import Box
from tpem_seg.util import atomic
from tpem_seg.util.partials import resumable_name

log = logging.getLogger(__name__)

RUN_FOLDER = ".tpem-run"
#: zarr's own temporary chunk names (``KEY.<32 hex>.partial``), left behind by a killed worker.
_ZARR_TEMP = re.compile(r"\.[0-9a-f]{32}\.partial$")


def chunks_for(shape: Sequence[int], dtype: np.dtype, block: Sequence[int]) -> tuple[int, ...]:
    """Chunks for an output of ``shape`` (``ZYX`` or ``CZYX``) whose blocks are ``block`` (z, y, x):
    per axis the largest divisor of the block no larger than the writer's usual chunk
    (:func:`~tpem_seg.io.writers.zarr_chunks`), so every block core is whole chunks."""
    usual = zarr_chunks(tuple(shape), np.dtype(dtype))
    spatial = tuple(max(d for d in range(1, b + 1) if b % d == 0 and d <= u) for b, u in zip(block, usual[-3:]))
    return (*usual[:-3], *spatial)


class BlockStore:
    """The output folder of one distributed run (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    # -- the driver ---------------------------------------------------------------------------------

    @classmethod
    def partial_of(cls, final: Path) -> "BlockStore":
        return cls(resumable_name(Path(final)))

    @classmethod
    def create(cls, final: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str, spacing, channel_names,
               label_names, chunks: tuple[int, ...], manifest: dict[str, Any], levels: int = 1) -> "BlockStore":
        """Lay out an empty output of ``levels`` pyramid levels under ``final``'s resumable name
        (replacing a stopped run there)."""
        store = cls.partial_of(final)
        atomic.remove(store.folder)
        try:
            store.folder.mkdir()
            create_zarr_image(store.folder, Path(final), shape, np.dtype(dtype), axes, spacing, channel_names or [],
                              label_names or [], chunks, levels=levels)
            atomic.write_text(store.folder / RUN_FOLDER / "manifest.json", json.dumps(manifest, indent=1))
        except OSError as err:
            raise OutputError(f"cannot create {store.folder} ({err.strerror or err}); check the folder's "
                              "permissions and free space") from err
        return store

    def exists(self) -> bool:
        return (self.folder / RUN_FOLDER / "manifest.json").is_file()

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.folder / RUN_FOLDER / "manifest.json").read_text(encoding="utf-8"))

    def done(self) -> dict[int, dict[str, Any]]:
        """The blocks whose marker is there, with what each marker says."""
        found = {}
        for marker in (self.folder / RUN_FOLDER / "done").glob("*/*.json"):
            if marker.stem.isdigit():
                found[int(marker.stem)] = json.loads(marker.read_text(encoding="utf-8"))
        return found

    def publish(self, final: Path) -> Path:
        """Move the complete output to ``final`` (markers and zarr's stray temporaries removed)."""
        atomic.remove(self.folder / RUN_FOLDER / "done")
        for stray in self.folder.rglob("*.partial"):
            if _ZARR_TEMP.search(stray.name):
                stray.unlink()
        atomic.replace(self.folder, final)
        return Path(final)

    # -- a worker ----------------------------------------------------------------------------------

    def _marker(self, index: int) -> Path:
        return self.folder / RUN_FOLDER / "done" / f"{index // 1000:04d}" / f"{index}.json"

    def marker(self, index: int) -> dict[str, Any] | None:
        """What block ``index``'s marker says, or None when it is not done."""
        try:
            return json.loads(self._marker(index).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def mark_done(self, index: int, record: dict[str, Any]) -> None:
        atomic.write_text(self._marker(index), json.dumps(record))

    def write(self, core: Box, data: np.ndarray) -> None:
        """Write a block's output ``data`` (``(dz, dy, dx)``, or ``(K, dz, dy, dx)``) at ``core``."""
        import zarr

        array = zarr.open_array(str(self.folder / "0"), mode="r+")
        array[box_index(core, array.ndim)] = data
