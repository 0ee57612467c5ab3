"""Free disk space: checked before writing an output of known size, and named when the disk fills."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from tpem_seg.errors import OutputError

#: Room kept beyond the image data for headers, IFDs and metadata files.
MARGIN_BYTES = 1 << 16


def free_bytes(folder: Path) -> int:
    return int(shutil.disk_usage(folder).free)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def check_free_space(path: Path, nbytes: int) -> None:
    """Refuse to start writing ``nbytes`` (known: uncompressed data) to ``path`` on a disk without them.

    Raises:
        OutputError: naming the space needed and the space free.
    """
    folder = path.absolute().parent
    free = free_bytes(folder)
    if nbytes + MARGIN_BYTES > free:
        raise OutputError(f"not enough space for {path}: it needs about {_mb(nbytes + MARGIN_BYTES)} but "
                          f"{folder} has {_mb(free)} free; free some space or choose another output folder")


def is_disk_full(err: OSError, folder: Path, still_needed: int) -> bool:
    """True for ENOSPC/EDQUOT, or a short write (no errno) on a disk with less free than ``still_needed``."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if err.errno is None:
        try:
            return free_bytes(folder) < still_needed
        except OSError:
            return False
    return False


def disk_full_error(path: Path, nbytes: int) -> OutputError:
    """The one-line error for a disk that filled while writing ``path`` of about ``nbytes``."""
    folder = path.absolute().parent
    try:
        free = _mb(free_bytes(folder))
    except OSError:
        free = "unknown"
    return OutputError(f"the disk filled while writing {path} (partial file removed): the output needs about "
                       f"{_mb(nbytes + MARGIN_BYTES)}, {folder} has {free} free; free some space or choose "
                       "another output folder")
