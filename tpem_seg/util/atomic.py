"""Atomic outputs: write under a hidden temporary name beside the target, rename at the end.

An interrupted or failed write never leaves a file (or folder) under the final name that looks
complete: readers see the old output or the new one, never half of one. Temporaries are named
``.NAME.partial-XXXXXXXX`` in the target's folder (same file system, so the rename is atomic
for files) and are created with the user's umask, not ``mkstemp``'s private 0600/0700, because
the rename keeps the mode and outputs are meant to be shared.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from tpem_seg.errors import OutputError

log = logging.getLogger(__name__)


def temp_path(final: str | os.PathLike, folder: bool = False) -> Path:
    """Create a new, empty hidden temporary file (or folder) beside ``final`` and return its path."""
    final = Path(final)
    for _ in range(100):
        temp = final.with_name(f".{final.name}.partial-{secrets.token_hex(4)}")
        try:
            if folder:
                os.mkdir(temp, 0o777)
            else:
                os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return temp
    raise OutputError(f"cannot find a free temporary name next to {final}; "
                      f"delete the .{final.name}.partial-* files there")


def replace(temp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename ``temp`` to ``final``, replacing an older output there (a file, or a whole folder)."""
    temp, final = Path(temp), Path(final)
    if not temp.is_dir():
        os.replace(temp, final)  # atomic for files
        return
    if not final.exists():
        os.rename(temp, final)
        return
    # A folder cannot be replaced in one step: move the old one aside first.
    old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    os.rename(final, old)
    os.rename(temp, final)
    try:
        shutil.rmtree(old)
    except OSError:
        log.warning("replaced %s but could not remove its old copy %s; delete it by hand", final, old,
                    exc_info=True)


def remove(path: str | os.PathLike) -> None:
    """Delete a file or a folder tree, if it is there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """A temporary path to write ``final`` under; renamed to ``final`` when the block succeeds,
    removed when it raises (Ctrl-C included)."""
    temp = temp_path(final, folder)
    try:
        yield temp
        replace(temp, final)
    except BaseException:
        remove(temp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically, creating its folder; returns the path."""
    return write_bytes(path, text.encode("utf-8"))
