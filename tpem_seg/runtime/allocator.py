"""Keep freed memory in the process for reuse (glibc malloc), so the network's tensors do not page-fault.

glibc hands allocations above its mmap threshold to ``mmap`` and returns them with ``munmap``,
and trims the heap's free top back to the system above its trim threshold. The network's
activations (several MB each, the same sizes every call) then come back as fresh pages on every
call, and the kernel faults and zeroes them again: on this project's 2-core CPU that cost 22% of
the small models' bf16 network time (115 ms against 89 ms per call of 8 ``vessels-2p`` tiles).
Raising both thresholds keeps that memory in the heap for the next call; either alone is worse
than neither (glibc's dynamic mmap threshold is switched off by setting either).

The command line calls :func:`keep_freed_memory` once at start; programs that embed the
Python API may call it themselves. It changes the whole process's allocator, so the library
never calls it on its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap (glibc's largest allowed value on 64-bit: 32 MiB).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the heap's top kept for reuse rather than returned to the system.
TRIM_THRESHOLD = 256 << 20
#: Environment variables through which a user already chose the allocator's behaviour.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns what happened, in words: applied, or why not (not glibc; the user's own allocator
    settings in :data:`USER_SETTINGS`, which are left alone; ``mallopt`` refused).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "left as is: not glibc"
    chosen = [name for name in USER_SETTINGS if os.environ.get(name)]
    if chosen:
        return f"left as is: set by {', '.join(chosen)}"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = (libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD))
               and libc.mallopt(ctypes.c_int(M_TRIM_THRESHOLD), ctypes.c_int(TRIM_THRESHOLD)))
    if not applied:
        return "left as is: mallopt refused"
    return f"applied: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
