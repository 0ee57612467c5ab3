"""The machine a timing depends on: CPU, cores, load, memory, GPU, library versions."""

from __future__ import annotations

import os
import platform

from tpem_seg.runtime.devices import cpu_count, cpu_model, cpu_supports_bf16, cuda_device_count, library_versions


def machine_info(device: str = "cpu") -> dict:
    """CPU model and cores, load, memory, GPU, library versions: what a timing depends on."""
    info: dict = {"cpu": cpu_model(), "cores": cpu_count(), "native_bf16": cpu_supports_bf16(),
                  "python": platform.python_version(), "platform": platform.platform(),
                  "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                  "cuda_gpus": cuda_device_count()}
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    info["versions"] = library_versions()
    import torch

    info["torch_threads"] = torch.get_num_threads()
    info["env"] = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 1e9, 1),
                       "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version()}
    return info
