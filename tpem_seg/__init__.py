"""tpem-seg: segment 3D two-photon microscopy volumes, trained from few labels, deployed fast.

The public API::

    from tpem_seg import Segmenter, read_volume, write_volume
    labels = Segmenter("vessels-2p").segment(read_volume("stack.tif"))
"""

from tpem_seg.errors import TpemSegError
from tpem_seg.io import Volume, read_volume, write_volume
from tpem_seg.models import ModelPackage, list_models, open_package, zoo_packages
from tpem_seg.runtime import RunSummary, Segmenter, TileOptions
from tpem_seg.version import __version__

__all__ = [
    "ModelPackage", "RunSummary", "Segmenter", "TileOptions", "TpemSegError", "Volume", "__version__",
    "list_models", "open_package", "read_volume", "write_volume", "zoo_packages",
]
