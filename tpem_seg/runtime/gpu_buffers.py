"""CUDA streams and buffers through cuda-python (``cuda.bindings.runtime``), for the TensorRT backend.

The TensorRT backend moves tiles with this module rather than torch, so a workstation that
runs engines needs no training stack (``pip install 'tpem-seg[tensorrt]'`` brings TensorRT and
cuda-python). Device buffers are allocated once, for the largest batch, and stay on the GPU
between tiles; host staging buffers are page-locked so copies run asynchronously on the stream.

cuda-python functions return ``(error, value...)`` tuples; :func:`check` turns a non-success
error into an exception. cuda-python is imported inside the functions.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np

log = logging.getLogger(__name__)


def cudart():
    """The CUDA runtime bindings: ``cuda.bindings.runtime`` (cuda-python >= 12.6) or ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime  # cuda-python < 12.6
    return runtime


def check(result):
    """The value(s) of a cuda-python call's ``(error, value...)`` tuple; raise on a CUDA error."""
    rt = cudart()
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise RuntimeError(f"CUDA runtime call failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def set_device(index: int) -> None:
    check(cudart().cudaSetDevice(index))


class Stream:
    """A CUDA stream (``cudaStreamCreate``); ``handle`` is what ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        self._stream = check(cudart().cudaStreamCreate())

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def raw(self):
        return self._stream

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        if self._stream is not None:
            check(cudart().cudaStreamDestroy(self._stream))
            self._stream = None


class DeviceBuffer:
    """``nbytes`` of GPU memory (``cudaMalloc``), kept until :meth:`close`."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart().cudaMalloc(self.nbytes)))

    def close(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr))
            self.ptr = 0


class PinnedArray:
    """A page-locked host array (``cudaMallocHost``) of ``shape`` and ``dtype``, viewed as numpy."""

    def __init__(self, shape: tuple[int, ...], dtype=np.float32) -> None:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        self.nbytes = count * dtype.itemsize
        self.ptr = int(check(cudart().cudaMallocHost(self.nbytes)))
        pointer = ctypes.cast(self.ptr, ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype)))
        self.array = np.ctypeslib.as_array(pointer, (count,)).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self.array = None
            check(cudart().cudaFreeHost(self.ptr))
            self.ptr = 0


def copy_to_device(dst: DeviceBuffer, src: PinnedArray, nbytes: int, stream: Stream) -> None:
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw))


def copy_to_host(dst: PinnedArray, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    rt = cudart()
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw))
