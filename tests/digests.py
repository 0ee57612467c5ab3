"""Content digests for tests that check an input is left untouched (imported as ``digests``: the
root conftest's folder is on ``sys.path``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_digest(path: Path) -> str:
    """sha256 over a file, or over a folder's relative names, link targets and file contents."""
    h = hashlib.sha256()
    if path.is_file() and not path.is_symlink():
        h.update(path.read_bytes())
        return h.hexdigest()
    for entry in sorted(path.rglob("*")):
        h.update(str(entry.relative_to(path)).encode())
        if entry.is_symlink():
            h.update(os.readlink(entry).encode())
        elif entry.is_file():
            h.update(entry.read_bytes())
    return h.hexdigest()
