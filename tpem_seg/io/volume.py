"""The Volume: an array-like plus its axes, voxel size and channel names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tpem_seg.errors import InputError

#: Axis letters the runtime understands. ``C`` channel, ``Z`` ``Y`` ``X`` space.
#: Singleton ``T``/``S`` axes are squeezed by the readers before a Volume is made.
KNOWN_AXES = "CZYX"


@dataclass
class Volume:
    """A 3D (optionally multi-channel) image.

    Attributes:
        data: array-like (numpy array, memmap, zarr array) with ``data.shape``,
            ``data.dtype`` and numpy-style slicing. Never assumed to fit in memory.
        axes: one letter per dimension of ``data``, e.g. ``"ZYX"`` or ``"CZYX"``.
        spacing: voxel size ``(z, y, x)`` in micrometres, or None when unknown.
        channel_names: one name per channel (empty when unknown).
    """

    data: Any
    axes: str
    spacing: tuple[float, float, float] | None = None
    channel_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.axes = self.axes.upper()
        if len(self.axes) != len(self.data.shape):
            raise InputError(
                f"axes {self.axes!r} do not match the array's {len(self.data.shape)} dimensions "
                f"(shape {tuple(self.data.shape)}); pass axes with one letter per dimension, e.g. --axes CZYX"
            )
        if sorted(self.axes) != sorted(set(self.axes)) or set(self.axes) - set(KNOWN_AXES):
            raise InputError(f"axes {self.axes!r} must be distinct letters from {KNOWN_AXES!r}, e.g. ZYX or CZYX")
        for letter in "ZYX":
            if letter not in self.axes:
                raise InputError(f"axes {self.axes!r} lack {letter}; a volume needs Z, Y and X (e.g. --axes CZYX)")
        if self.spacing is not None:
            self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
            if len(self.spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing):
                raise InputError(f"voxel size {self.spacing} must be three positive numbers z,y,x in µm")

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Spatial shape ``(Z, Y, X)`` in voxels."""
        return tuple(int(self.data.shape[self.axes.index(a)]) for a in "ZYX")  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[self.axes.index("C")]) if "C" in self.axes else 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    def read_czyx(self, z0: int = 0, z1: int | None = None, channels: Sequence[int] | None = None,
                  yx_step: int = 1) -> np.ndarray:
        """Read planes ``z0:z1`` as a numpy array ``(C, z1-z0, Y, X)`` in the file's dtype.

        Only the requested planes are read from disk (memmap/zarr slicing).
        ``channels`` selects and orders channels (default: all). ``yx_step``: every n-th voxel in
        y and x (a sample of wide planes, without holding a whole plane).
        """
        z1 = self.shape_zyx[0] if z1 is None else z1
        step = slice(None, None, int(yx_step))
        index = tuple(slice(z0, z1) if a == "Z" else step if a in "YX" else slice(None) for a in self.axes)
        block = np.asarray(self.data[index])
        order = [self.axes.index(a) for a in KNOWN_AXES if a in self.axes]
        block = np.transpose(block, order)
        if "C" not in self.axes:
            block = block[np.newaxis]
        if channels is not None:
            block = block[list(channels)]
        return block
