"""Checkpoint -> verified model package (ONNX, parity, manifest), and TensorRT engines with build parity.

    from tpem_seg.export import ArchOptions, ExportOptions, export_package, source_from_checkpoint
    package, report = export_package(source_from_checkpoint("best.pt"), ExportOptions(Path("vessels.tpem")))

Imports torch, MONAI and ONNX when the functions run; see docs/export.md.
"""

from tpem_seg.export.errors import ExportError, ParityError

__all__ = ["ArchOptions", "EngineParityOptions", "ExportError", "ExportOptions", "ParityError", "ParityOptions",
           "build_checked_engine", "export_package", "source_from_checkpoint"]

_LAZY = {
    "ArchOptions": "tpem_seg.export.checkpoints", "source_from_checkpoint": "tpem_seg.export.checkpoints",
    "ExportOptions": "tpem_seg.export.exporter", "ParityOptions": "tpem_seg.export.exporter",
    "export_package": "tpem_seg.export.exporter", "EngineParityOptions": "tpem_seg.export.engine_build",
    "build_checked_engine": "tpem_seg.export.engine_build",
}


def __getattr__(name: str):
    """Import the heavy modules only when one of their names is used."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tpem_seg.export' has no attribute {name!r}")
