"""Tiled, streaming inference over volumes of any size, on TensorRT, ONNX Runtime or PyTorch."""

from tpem_seg.runtime.segmenter import RunSummary, Segmenter, TileOptions

__all__ = ["RunSummary", "Segmenter", "TileOptions"]
