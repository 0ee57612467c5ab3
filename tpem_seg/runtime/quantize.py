"""int8 static quantisation of a package's ONNX model with ONNX Runtime, for the CPU (VNNI).

Static QDQ quantisation, per-channel int8 weights and uint8 activations, calibrated (MinMax) on
normalised tiles. The quantised model is a separate file; the package is not changed (its
checksums cover its own files). ``onnxruntime.quantization`` is imported inside the function.

Measured here (benchmarks/results): on this repository's UNETRs, ONNX Runtime's int8 Conv3D is not
faster than its fp32 one, and dynamic quantisation (ConvInteger) is several times slower.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def quantize_static_int8(src: str | Path, dst: str | Path, calibration: np.ndarray) -> Path:
    """Write an int8 QDQ copy of the ONNX model ``src`` to ``dst``, calibrated on ``calibration``
    tiles ``(n, C, D, H, W)`` float32 (normalised, as the network sees them). Returns ``dst``."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self._tiles = iter(calibration[i:i + 1] for i in range(len(calibration)))

        def get_next(self):
            tile = next(self._tiles, None)
            return None if tile is None else {input_name: np.ascontiguousarray(tile, dtype=np.float32)}

    root = logging.getLogger()
    quiet = _DropPerChannelNotes()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(dst), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(quiet)
    log.info("int8 model written to %s (calibrated on %d tiles)", dst, len(calibration))
    return dst


class _DropPerChannelNotes(logging.Filter):
    """ONNX Runtime's quantiser logs one root-logger warning per 1-D weight (norm scales, biases) that
    per-channel quantisation leaves per-tensor: hundreds of lines that say nothing is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()
