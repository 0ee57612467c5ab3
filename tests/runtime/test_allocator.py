"""keep_freed_memory: glibc keeps the network's freed tensors in the heap instead of unmapping them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tpem_seg.runtime.allocator import USER_SETTINGS, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a fresh process: allocate eight 16 MiB blocks, note how many are mmapped while alive (mallinfo2's
# hblks), free them, and note how much the heap still holds (arena).
PROBE = r"""
import ctypes, json, sys
from tpem_seg.runtime.allocator import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
status = keep_freed_memory() if sys.argv[1] == "apply" else "not called"
start = libc.mallinfo2()
blocks = [libc.malloc(16 << 20) for _ in range(8)]
mapped = libc.mallinfo2().hblks - start.hblks
for b in blocks:
    libc.free(b)
kept = libc.mallinfo2().arena - start.arena
print(json.dumps({"status": status, "mapped": mapped, "kept_mib": kept / 2**20}))
"""


def _probe(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="mallopt and mallinfo2 are glibc's")
def test_freed_tensors_stay_in_the_heap():
    default, applied = _probe("default"), _probe("apply")
    assert default["mapped"] == 8 and default["kept_mib"] < 16  # glibc's default: mmap, munmap on free
    assert applied["status"].startswith("applied")
    assert applied["mapped"] == 0 and applied["kept_mib"] >= 100  # heap blocks, kept for the next call


def test_user_settings_are_left_alone(monkeypatch):
    for name in USER_SETTINGS:  # others may be set already (dask's nanny sets MALLOC_TRIM_THRESHOLD_)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so")
    assert keep_freed_memory() == "left as is: set by LD_PRELOAD" or not GLIBC
