"""tpem_seg_cpp: the native tpem-seg runtime (libtpem) from Python.

>>> model = tpem_seg_cpp.Model("tpem_seg/zoo/vessels-2p.tpem", threads=2)
>>> labels = model.segment(volume)            # (Z, Y, X) or (C, Z, Y, X) uint8/uint16/float32
>>> probs = model.segment(volume, spacing=(5, 1, 1), output="probabilities")   # (K, Z, Y, X) float32

Arrays go to libtpem without a copy (C-contiguous uint8, uint16 or float32; anything else is
refused with the fix), and the GIL is released while it runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tpem_seg_cpp import _core
from tpem_seg_cpp._errors import (BackendError, BufferTooSmall, Cancelled, Error, InvalidArgument, IOFailure,
                                  PackageError)

__all__ = ["Model", "Stream", "Error", "InvalidArgument", "IOFailure", "PackageError", "BackendError",
           "BufferTooSmall", "Cancelled", "tile_grid", "gaussian_weights", "include_dir", "lib_dir", "cmake_dir",
           "abi_version", "__version__"]

__version__ = _core.version()
_DTYPES = {np.dtype(np.uint8): 0, np.dtype(np.uint16): 1, np.dtype(np.float32): 2}
_OUTPUTS = {"labels": 0, "probabilities": 1}
_HERE = Path(__file__).resolve().parent


def abi_version() -> int:
    return _core.abi_version()


def include_dir() -> str:
    """Folder holding tpem/tpem.h and tpem/tpem.hpp."""
    return str(_HERE / "include")


def lib_dir() -> str:
    """Folder holding libtpem.so."""
    return str(_HERE / "lib")


def cmake_dir() -> str:
    """Folder holding tpemConfig.cmake, for ``-Dtpem_DIR=...`` (find_package(tpem))."""
    return str(_HERE / "lib" / "cmake" / "tpem")


def _czyx(array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InvalidArgument(f"segment takes a numpy array, got {type(array).__name__}")
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise InvalidArgument(f"a {array.ndim}D array: give (Z, Y, X) or (C, Z, Y, X)")
    if array.dtype not in _DTYPES:
        raise InvalidArgument(f"dtype {array.dtype} unsupported; convert with array.astype(np.float32) "
                              f"(uint8, uint16 and float32 pass without a copy)")
    if not array.flags.c_contiguous:
        raise InvalidArgument("the array is not C-contiguous; pass np.ascontiguousarray(array) "
                              "(libtpem reads it in place, so it copies nothing by itself)")
    return array


class Model:
    """A model package opened by libtpem (checksums verified).

    Options (see tpem_model_open in tpem.h): threads, onnxruntime_library, providers,
    strict_providers, device_id, precision, backend, overlap, batch_size, sigma_scale,
    resample, verify.
    """

    def __init__(self, package: str | os.PathLike, **options):
        self._handle = _core.open_model(str(package), json.dumps(options))
        self.info = json.loads(self._handle.info())

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def channels(self) -> list[str]:
        return list(self.info["channels"])

    def segment(self, array: np.ndarray, spacing: Sequence[float] | None = None,
                output: str = "labels") -> np.ndarray:
        """Labels ``(Z, Y, X)`` uint8 or probabilities ``(K, Z, Y, X)`` float32 of ``array``.

        ``array``: ``(Z, Y, X)`` or ``(C, Z, Y, X)``; ``spacing``: its voxel size ``(z, y, x)`` in µm
        (None: the model's; a different one is resampled to the model's and back).
        """
        if output not in _OUTPUTS:
            raise InvalidArgument(f"output {output!r} must be one of {tuple(_OUTPUTS)}")
        data = _czyx(array)
        shape = data.shape[1:]
        if output == "labels":
            out = np.empty(shape, np.uint8)
        else:
            out = np.empty((len(self.info["classes"]), *shape), np.float32)
        _core.segment(self._handle, data, _DTYPES[data.dtype], list(data.shape),
                      None if spacing is None else [float(s) for s in spacing], _OUTPUTS[output], out)
        return out

    def fit_normalization(self, array: np.ndarray) -> tuple[list[float], list[float]]:
        """Per-channel (low, high) a whole-array call would use, e.g. to give a :class:`Stream`."""
        data = _czyx(array)
        return _core.fit_normalization(self._handle, data, _DTYPES[data.dtype], list(data.shape))

    def stream(self, shape: Sequence[int], dtype, on_slab: Callable[[int, np.ndarray], None],
               output: str = "labels", low: Sequence[float] | None = None,
               high: Sequence[float] | None = None) -> "Stream":
        """A :class:`Stream` over a volume of ``shape`` (C, Z, Y, X) of ``dtype``."""
        return Stream(self, shape, dtype, on_slab, output, low, high)


class Stream:
    """Push z-planes ``(C, Y, X)`` in order; ``on_slab(z0, block)`` gets each finished slab
    (labels ``(dz, Y, X)`` or probabilities ``(K, dz, Y, X)``) as soon as no later tile touches it."""

    def __init__(self, model: Model, shape: Sequence[int], dtype, on_slab: Callable[[int, np.ndarray], None],
                 output: str = "labels", low: Sequence[float] | None = None, high: Sequence[float] | None = None):
        dtype = np.dtype(dtype)
        if dtype not in _DTYPES:
            raise InvalidArgument(f"dtype {dtype} unsupported; use uint8, uint16 or float32")
        if output not in _OUTPUTS:
            raise InvalidArgument(f"output {output!r} must be one of {tuple(_OUTPUTS)}")
        options = {} if low is None and high is None else {"low": list(map(float, low or [])),
                                                           "high": list(map(float, high or []))}
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self._handle = _core.open_stream(model._handle, list(self.shape), _DTYPES[dtype], _OUTPUTS[output],
                                         json.dumps(options), on_slab, len(model.info["classes"]))

    def push(self, plane: np.ndarray) -> None:
        if plane.ndim == 2:
            plane = plane[None]
        if plane.dtype != self.dtype or not plane.flags.c_contiguous:
            raise InvalidArgument(f"a plane must be C-contiguous {self.dtype} (C, Y, X); got {plane.dtype}")
        self._handle.push(plane)

    def finish(self) -> None:
        self._handle.finish()


def tile_grid(shape: Sequence[int], tile: Sequence[int], overlap: float) -> tuple[list[tuple[int, int]], np.ndarray]:
    """libtpem's tile grid: per-axis (before, after) padding and the tile origins ``(N, 3)`` (z, y, x)."""
    pads, origins = _core.tile_grid(list(map(int, shape)), list(map(int, tile)), float(overlap))
    return [(pads[0], pads[1]), (pads[2], pads[3]), (pads[4], pads[5])], np.asarray(origins, np.int64).reshape(-1, 3)


def gaussian_weights(tile: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """libtpem's blending weights ``(D, H, W)`` float32."""
    return np.asarray(_core.gaussian_weights(list(map(int, tile)), float(sigma_scale)), np.float32).reshape(tuple(tile))
