"""Build a TensorRT engine for a package and record its parity against ONNX Runtime.

The runtime builds and caches engines (:mod:`tpem_seg.runtime.engines`); this adds the
export-side check: TensorRT against ONNX Runtime fp32 on the same tiles as export parity,
stored in the engine's sidecar (the manifest is never touched, its checksums stay valid).
An engine outside the tolerance is deleted and the build refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tpem_seg.export.parity import FP16_TOLERANCE, FP32_TOLERANCE, ParityReport, check_parity, engine_parity, \
    parity_tiles
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime import engines

log = logging.getLogger(__name__)

#: TensorRT fp32 (TF32 off) against ONNX Runtime fp32: kernels differ, so a little looser than export parity.
ENGINE_FP32_TOLERANCE = 10 * FP32_TOLERANCE


@dataclass(frozen=True)
class EngineParityOptions:
    """Tiles for build parity (random + real-looking, as at export) and the probability tolerance
    (None: fp16 5e-2, fp32 1e-3)."""

    random: int = 2
    real: int = 2
    volume: Path | None = None
    volume_axes: str | None = None
    tolerance: float | None = None
    batch_size: int = 2

    def tolerance_for(self, precision: str) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return FP16_TOLERANCE if precision == "fp16" else ENGINE_FP32_TOLERANCE


def build_checked_engine(package: ModelPackage, config: engines.EngineConfig, device: str = "cuda",
                         parity: EngineParityOptions = EngineParityOptions()) -> tuple[engines.EngineRecord,
                                                                                        ParityReport]:
    """Build (or rebuild) the engine for ``config`` on ``device``, measure parity, record it in the sidecar.

    Raises BackendUnavailable without TensorRT or a GPU, EngineBuildError if TensorRT fails, and
    ParityError (after deleting the engine) if TensorRT strays beyond the tolerance.
    """
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    engines.require_tensorrt(device)
    record = engines.build_engine(package, config, device)
    tiles = parity_tiles(package.manifest, parity.random, parity.real, parity.volume, volume_axes=parity.volume_axes)
    backend = TensorRTBackend(package, device=device, precision=config.precision, build=False, record=record)
    report = engine_parity(package, backend, tiles, parity.tolerance_for(config.precision), parity.batch_size)
    engines.record_parity(record, report.to_dict())
    if not report.passed:
        discard_engine(record)
    check_parity(report, f"the TensorRT {config.precision} engine {record.plan.name}", "the engine was deleted")
    return record, report


def discard_engine(record: engines.EngineRecord) -> None:
    """Delete an engine's plan and sidecar (it failed parity: it must never be picked up)."""
    for path in (record.plan, record.sidecar):
        path.unlink(missing_ok=True)
    log.warning("deleted %s: it failed parity", record.plan.name)
