"""Architectures, the registry of named configs, and the model-package format."""

from tpem_seg.models.manifest import Manifest, NormalizationSpec
from tpem_seg.models.package import ModelPackage, open_package, write_package, zoo_packages
from tpem_seg.models.config import UNETRConfig
from tpem_seg.models.registry import create_model, get_config, list_models

__all__ = [
    "Manifest", "ModelPackage", "NormalizationSpec", "UNETRConfig", "create_model", "get_config",
    "list_models", "open_package", "write_package", "zoo_packages",
]
