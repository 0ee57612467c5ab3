"""The per-user cache folder: engines built for read-only packages, ONNX Runtime's TensorRT
cache, benchmark packages with random weights.

``$TPEM_SEG_CACHE`` if set, else ``$XDG_CACHE_HOME/tpem-seg``, else ``~/.cache/tpem-seg``.
Read at each call (not at import), so a changed environment takes effect.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the cache folder.
CACHE_ENV = "TPEM_SEG_CACHE"


def cache_root() -> Path:
    """The tpem-seg cache folder (not created here)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tpem-seg"
    return Path(os.environ.get(CACHE_ENV) or default)
