"""Memory while a configuration runs: host resident set (current, peak) and device memory sampled."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:  # not Linux
        return None
    return None


class HostMemory:
    """This process's resident memory (MB): current, and the peak since :meth:`reset_peak`.

    The peak is Linux's VmHWM, reset through ``/proc/self/clear_refs`` so each configuration gets
    its own; where that is impossible the peak is the process's lifetime peak (``scope``).
    """

    def __init__(self) -> None:
        self.scope = "since reset"

    def current_mb(self) -> float | None:
        kb = _status_kb("VmRSS")
        return kb / 1024 if kb is not None else None

    def reset_peak(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
        except OSError as err:
            if self.scope != "process lifetime":
                log.warning("cannot reset the peak RSS (%s): peaks are the process's lifetime peak", err)
            self.scope = "process lifetime"

    def peak_mb(self) -> float | None:
        kb = _status_kb("VmHWM")
        if kb is None:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024


class GpuMemorySampler:
    """Samples the device's used memory (``cudaMemGetInfo``, MB) every ``interval`` s in a thread;
    ``peak_mb`` is the largest seen. Device-wide: it sees ONNX Runtime's and TensorRT's memory too."""

    def __init__(self, device: str, interval: float = 0.005):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def used_mb(self) -> float:
        free, total = self._torch.cuda.mem_get_info(self.device)
        return (total - free) / 2**20

    def __enter__(self) -> "GpuMemorySampler":
        self.peak_mb = self.used_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tpem-gpu-mem", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.used_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, self.used_mb())


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))
