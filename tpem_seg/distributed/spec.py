"""What the driver ships to workers: numbers and short strings, never arrays or tile plans.

A :class:`RunSpec` names the input, the model package, the backend, the run's settings, the
normaliser's per-channel numbers, the block size and the output store; a worker rebuilds everything
else from it (the volume reader, the global tile plan, the block's part of it). A brain's tile plan
is megabytes; a spec is a few hundred bytes, sent once per task. :class:`BlockResult` is what a
block sends back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tpem_seg.runtime.normalize import Normalizer
from tpem_seg.runtime.settings import TileOptions

#: Version of the run manifest a resumed run is compared against.
MANIFEST_FORMAT = "tpem-seg-distributed-run/1"


@dataclass(frozen=True)
class RunSpec:
    """One distributed run, as plain values.

    run_id: names the run (task keys, the worker plugin); store: the output folder being filled (its
    partial name); source, axes, spacing: the input as :func:`~tpem_seg.io.read_volume` opens it on
    a worker (shared storage), spacing ``(z, y, x)`` µm; package: the model package's folder;
    package_sha256: of its manifest; backend: a :class:`~tpem_seg.runtime.backends.BackendSpec` as a
    dict (threads are the worker's own); output, channels, resample, tiles: the run's settings
    (tiles: :class:`~tpem_seg.runtime.settings.TileOptions` fields, batch size fixed by the driver so
    every worker makes the same network calls); low, high, clip: the normaliser fitted once on the
    driver; shape: the output's ``(Z, Y, X)``; block: the block core ``(z, y, x)``; n_blocks: how many;
    levels: the output's OME-Zarr pyramid levels (level 0 from the blocks, the others after them).
    """

    run_id: str
    store: str
    source: str
    axes: str | None
    spacing: tuple[float, float, float] | None
    package: str
    package_sha256: str
    backend: dict[str, Any]
    output: str
    channels: tuple[int, ...] | None
    resample: bool
    tiles: dict[str, Any]
    low: tuple[float, ...]
    high: tuple[float, ...]
    clip: bool
    shape: tuple[int, int, int]
    block: tuple[int, int, int]
    n_blocks: int
    levels: int = 1

    @property
    def normalizer(self) -> Normalizer:
        return Normalizer(np.asarray(self.low, np.float32), np.asarray(self.high, np.float32), self.clip)

    @property
    def tile_options(self) -> TileOptions:
        return TileOptions(**self.tiles)

    @property
    def plugin_name(self) -> str:
        return f"tpem-seg-backend-{self.run_id}"

    def task_key(self, attempt: str, index: int) -> str:
        """A key unique to the run, this driver's attempt and the block (dask keys must not repeat)."""
        return f"tpem-block-{self.run_id}-{attempt}-{index}"

    def manifest(self, grid: dict[str, Any]) -> dict[str, Any]:
        """What a resumed run must share with this one (everything that changes the output), plus the
        run id; ``grid``: the tile plan's parameters (tile, overlap, padded shape, tiles)."""
        fields = asdict(self)
        for transient in ("store", "source", "package"):  # paths may differ (moved or mounted elsewhere)
            fields.pop(transient)
        return {"format": MANIFEST_FORMAT, **_plain(fields), "grid": _plain(grid)}


def manifest_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The manifest keys whose values differ (the run id aside)."""
    keys = sorted((set(old) | set(new)) - {"run_id"})
    return [k for k in keys if old.get(k) != new.get(k)]


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, numpy numbers as Python's)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class BlockResult:
    """What one block did: index; tiles computed and of them skipped as empty; seconds busy on the
    worker; output voxels; the backend's description; the worker's address; the worker process's peak
    resident memory so far in MB (Linux's VmHWM: what a block costs a worker, whatever the
    volume's size); whether it was already done (a retried or resumed block that returned at once)."""

    index: int
    tiles: int
    skipped: int
    seconds: float
    voxels: int
    backend: str
    worker: str = ""
    peak_rss_mb: int = 0
    already_done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BlockResult":
        return cls(**d)
