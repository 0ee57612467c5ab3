"""Provenance for checkpoints, packages and reports: the source commit and the command that ran."""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def source_commit() -> str | None:
    """``HEAD`` of the checkout tpem-seg runs from, with ``+dirty`` when tracked files differ from it
    (so a result made with uncommitted code never claims a clean commit); None outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.debug("no git commit for provenance: %s", err)
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def process_command(argv: list[str] | None = None) -> str:
    """The command that started this process (``sys.argv``), as a shell line.

    ``python -m tpem_seg.cli ...`` and ``torchrun ... -m tpem_seg.cli ...`` (``argv[0]`` is then the
    package's ``__main__.py``) are written as the ``tpem-seg ...`` they are equivalent to.
    """
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]) if argv else Path("python")
    if program.name == "__main__.py" and program.parent.name == "cli":
        name = "tpem-seg"
    else:
        name = program.name
    return shlex.join([name, *argv[1:]])
