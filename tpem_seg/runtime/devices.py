"""This machine: which devices exist (asked of the CUDA driver directly, no torch import), the
CPU's model and flags, the library versions."""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata as md
import logging
import os
import platform

from tpem_seg.errors import BackendUnavailable

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Number of CUDA GPUs the driver reports; 0 without a driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        log.debug("libcuda present but cuInit/cuDeviceGetCount failed")
        return 0
    return int(count.value)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` where a GPU is visible, else ``cpu``; others are checked."""
    device = device.lower()
    n_gpus = cuda_device_count()
    if device == "auto":
        return "cuda" if n_gpus else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        index = int(device[5:]) if ":" in device else 0
        if index >= n_gpus:
            raise BackendUnavailable(f"device {device} asked for, but {n_gpus} CUDA GPU(s) are visible; "
                                     f"use --device cpu")
        return device
    raise BackendUnavailable(f"device {device!r} unknown; use auto, cpu, cuda or cuda:N")


def device_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:  # not Linux: no flags to read, callers fall back
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where bf16 autocast pays off."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_flags() -> tuple[str, ...]:
    """The CPU's feature flags (``/proc/cpuinfo``), sorted; empty where unknown."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return tuple(sorted(set(line.split(":", 1)[1].split())))
    return ()


#: The distributions whose versions a timing (and a tuned configuration) depends on.
LIBRARIES = ("tpem-seg", "numpy", "torch", "monai", "onnxruntime", "onnxruntime-gpu", "tensorrt", "openvino")


def library_versions(dists=LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution, None where not installed (none is imported)."""
    versions: dict[str, str | None] = {}
    for dist in dists:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return versions
