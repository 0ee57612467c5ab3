"""Temporary output names, their clean-up after a killed run, and one writer per output.

A writer fills ``.NAME.partial-HOST-PID-TOKEN`` and renames it to ``NAME`` when
complete. A run killed outright (SIGKILL, power loss) cannot remove its temporary
file; the next run writing ``NAME`` from the same machine removes the ones whose
process is gone. Names from other machines (a shared file system) or from live
processes are left alone, so two runs never delete each other's work.

A distributed run (:mod:`tpem_seg.distributed`) fills ``.NAME.partial-resumable`` instead: one fixed
name per output, which this clean-up never removes, so a stopped run can be found and continued.

Two runs writing the same ``NAME`` at once would race for the final rename: an
:class:`OutputLock` (``flock`` on ``.NAME.lock``) lets the second refuse at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

from tpem_seg.errors import OutputError

logger = logging.getLogger(__name__)


def _host_tag() -> str:
    """A short, file-name-safe tag of this machine."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def partial_name(final: Path) -> Path:
    """A fresh temporary name beside ``final``: ``.NAME.partial-HOST-PID-TOKEN``."""
    return final.with_name(f".{final.name}.partial-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}")


def resumable_name(final: Path) -> Path:
    """The one temporary name of a resumable (distributed) run writing ``final``: ``.NAME.partial-resumable``."""
    return final.with_name(f".{final.name}.partial-resumable")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(final: Path) -> list[Path]:
    """Remove temporary outputs of ``final`` left by dead processes of this machine; returns them."""
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.partial-([0-9a-f]{{6}})-(\d+)-[0-9a-f]{{8}}$")
    host = _host_tag()
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return removed  # the writer reports an unusable folder itself
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or match.group(1) != host or _alive(int(match.group(2))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue  # another run cleaned it first
        logger.info("removed %s, left by an interrupted run", entry)
        removed.append(entry)
    return removed


class OutputLock:
    """An exclusive, non-blocking lock on writing ``final`` (``flock`` on ``.NAME.lock`` beside it).

    The lock file is removed on release. A lock file whose holder died is simply taken
    over: ``flock`` locks die with their process.

    Raises:
        OutputError: (on :meth:`acquire`) another process holds the lock.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = final.with_name(f".{final.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise OutputError(f"another run is writing {self.final} right now; wait for it to finish "
                                      "or choose another output name") from None
                raise
            # The holder before us may have removed the file after we opened it: lock the live one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while holding it, so no one else can hold this inode
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
