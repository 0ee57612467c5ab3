"""tpem-seg: segment 3D two-photon microscopy volumes, trained from few labels, deployed fast.

The public API::

    from tpem_seg import Segmenter, read_volume, write_volume
    labels = Segmenter("vessels-2p").segment(read_volume("stack.tif"))

The names load on first use (SPEC 1 lazy loading), so ``import tpem_seg.cli`` and
``tpem-seg --help`` do not pay for the I/O and runtime stacks they may not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tpem_seg.version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from tpem_seg.errors import TpemSegError
    from tpem_seg.io import Volume, read_volume, write_volume
    from tpem_seg.models import ModelPackage, list_models, open_package, zoo_packages
    from tpem_seg.runtime import RunSummary, Segmenter, TileOptions

#: Public name -> the module that defines it.
_EXPORTS = {
    "TpemSegError": "tpem_seg.errors",
    "Volume": "tpem_seg.io", "read_volume": "tpem_seg.io", "write_volume": "tpem_seg.io",
    "ModelPackage": "tpem_seg.models", "list_models": "tpem_seg.models", "open_package": "tpem_seg.models",
    "zoo_packages": "tpem_seg.models",
    "RunSummary": "tpem_seg.runtime", "Segmenter": "tpem_seg.runtime", "TileOptions": "tpem_seg.runtime",
}

__all__ = ["ModelPackage", "RunSummary", "Segmenter", "TileOptions", "TpemSegError", "Volume", "__version__",
           "list_models", "open_package", "read_volume", "write_volume", "zoo_packages"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tpem_seg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
