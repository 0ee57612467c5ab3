"""Metadata shared by the readers: what a file says, axis letters, length units.

Every reader turns its file into a :class:`RawVolume` (the array in the file's own
dimension order plus what the metadata says); :func:`resolve_axes` then maps the
file's axis letters onto the ``CZYX`` letters a :class:`~tpem_seg.io.Volume` uses.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tpem_seg.errors import InputError

logger = logging.getLogger(__name__)

#: Key under which this project stores the voxel size ``[z, y, x]`` in µm in JSON-like
#: metadata (tifffile "shaped" TIFF descriptions, zarr attributes, the ``.npy`` sidecar).
#: The same key as the restacked cellfinder file in ``../shared/data`` uses.
VOXEL_SIZE_KEY = "voxel_size_um_zyx"

#: Micrometres per unit, keyed by the lower-case unit names found in OME, ImageJ and OME-Zarr.
_UM_PER_UNIT = {
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "angstrom": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "nanometers": 1e-3,
    "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "micrometers": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
    "in": 25400.0, "inch": 25400.0,
}

Spacing = tuple[float, float, float]

#: Display colours (RGB, 0-255) of classes 1, 2, ... in label images and of probability
#: channels; class 0 (background) is transparent in labels and grey as a channel. Chosen
#: to stay distinct on a black background and for the common forms of colour blindness.
CLASS_RGB = ((230, 60, 60), (60, 200, 90), (70, 130, 255), (255, 200, 40), (200, 80, 220), (40, 210, 210))
BACKGROUND_RGB = (160, 160, 160)


def class_rgb(index: int) -> tuple[int, int, int]:
    """Display colour of class ``index`` (0 = background), cycling past the palette."""
    return BACKGROUND_RGB if index == 0 else CLASS_RGB[(index - 1) % len(CLASS_RGB)]


@dataclass
class RawVolume:
    """A file as opened, before its axes are mapped to ``CZYX``.

    Attributes:
        data: array-like in the file's own dimension order (not loaded).
        axes: the file's axis letters (tifffile/OME letters such as ``"TZCYX"``,
            ``"IYX"``), or None when the file names none.
        spacing: voxel size ``(z, y, x)`` in µm from the metadata, or None.
        channel_names: names from the metadata (may be empty).
        closers: what to call to release the file (handles behind ``data``).
    """

    data: Any
    axes: str | None
    spacing: Spacing | None = None
    channel_names: list[str] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Release the file handles behind ``data``."""
        while self.closers:
            self.closers.pop(0)()


def um_per_unit(unit: str | None) -> float | None:
    """Micrometres in one ``unit`` (``"nm"``, ``"micron"``, ``"\\u00B5m"``...), None if not a length."""
    if unit is None:
        return None
    # ImageJ escapes the micro sign in its description ("\u00B5m").
    key = str(unit).strip().lower().replace("\\u00b5", "µ")
    return _UM_PER_UNIT.get(key)


def valid_spacing(values: Sequence[float | None] | None) -> Spacing | None:
    """``(z, y, x)`` as floats when all three are finite and positive, else None."""
    if values is None or len(values) != 3:
        return None
    try:
        floats = tuple(float(v) for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if all(math.isfinite(v) and v > 0 for v in floats):
        return floats  # type: ignore[return-value]
    return None


def _need_axes_error(shape: Sequence[int], source: str) -> InputError:
    example = "CZYX" if len(shape) == 4 else "ZYX"
    return InputError(
        f"{source}: cannot tell which axis is which in its {len(shape)}D array (shape {tuple(shape)}); "
        f"pass the axes, e.g. --axes {example}"
    )


def _map_letter(letter: str, size: int, file_axes: str, source: str) -> str | None:
    """One file axis letter as a CZYX letter, None to drop it, or ``?`` when unknown."""
    if letter in "CZYX":
        return letter
    if size == 1:
        return None  # singleton T, S, I... carry no data
    if letter == "S" and "C" not in file_axes:
        return "C"  # samples (e.g. RGB) are channels here
    if letter == "T":
        if "Z" in file_axes:
            raise InputError(
                f"{source} is a time series ({size} time points, axes {file_axes}); "
                "save one time point as its own volume (e.g. Fiji: Image > Duplicate) and segment that"
            )
        # Fiji often labels a z-stack as frames; a 3D stack is what we segment.
        logger.warning("%s: treating its %d time points as z planes (no z axis in the file)", source, size)
        return "Z"
    return "?"


def _axes_from_file(shape: Sequence[int], file_axes: str | None, source: str) -> tuple[str, tuple[int, ...]]:
    if file_axes is None or len(file_axes) != len(shape):
        if len(shape) in (2, 3):
            return "ZYX"[-len(shape):], ()
        raise _need_axes_error(shape, source)
    file_axes = file_axes.upper()
    letters: list[str] = []
    drop: list[int] = []
    for i, (letter, size) in enumerate(zip(file_axes, shape)):
        mapped = _map_letter(letter, int(size), file_axes, source)
        if mapped is None:
            drop.append(i)
        else:
            letters.append(mapped)
    # A plain page sequence ('I') or a tifffile unknown ('Q') is the z axis of a stack.
    if letters.count("?") == 1 and "Z" not in letters:
        letters[letters.index("?")] = "Z"
    if "?" in letters:
        raise _need_axes_error(shape, source)
    return "".join(letters), tuple(drop)


def _axes_from_user(shape: Sequence[int], axes: str, source: str) -> tuple[str, tuple[int, ...]]:
    axes = axes.strip().upper()
    if len(axes) == len(shape):
        return axes, ()
    singletons = tuple(i for i, n in enumerate(shape) if n == 1)
    if len(axes) == len(shape) - len(singletons):
        return axes, singletons
    example = "CZYX" if len(shape) - len(singletons) == 4 else "ZYX"
    raise InputError(
        f"--axes {axes} has {len(axes)} letters but {source} has {len(shape)} dimensions "
        f"(shape {tuple(shape)}); pass one letter per dimension, e.g. --axes {example}"
    )


def resolve_axes(shape: Sequence[int], file_axes: str | None, user_axes: str | None,
                 source: str) -> tuple[str, tuple[int, ...]]:
    """The ``CZYX`` letters of an array and which of its singleton dimensions to drop.

    Args:
        shape: the array's shape in the file's order.
        file_axes: the file's letters (tifffile/OME/OME-Zarr), None when it has none.
        user_axes: letters given by the user (``--axes``); they win over the file's.
        source: how to name the file in messages.

    Returns:
        ``(axes, drop)``: one letter per kept dimension, and the indices of dropped
        singleton dimensions (e.g. ``T`` of size 1).

    Raises:
        InputError: a 4D+ array whose axes are unknown, a time series, or ``user_axes``
            with the wrong number of letters.
    """
    if user_axes:
        axes, drop = _axes_from_user(shape, user_axes, source)
        if file_axes and file_axes.upper() != axes:
            logger.info("%s: using axes %s as given (the file says %s)", source, axes, file_axes)
        return axes, drop
    return _axes_from_file(shape, file_axes, source)
