"""One interface over every inference backend (Polygraphy's runner idea).

A backend turns a batch of normalised tiles ``(N, C, D, H, W)`` float32 into
logits ``(N, K, D, H, W)`` float32. The base class checks shapes and dtypes and
the lifecycle; subclasses do only their own backend's work, and import their
heavy libraries inside their own module.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tpem_seg.models.package import ModelPackage

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class InputSpec:
    """What a backend accepts: ``(N, channels, *tile)`` float32, ``N`` from 1 to ``max_batch``."""

    channels: int
    tile: tuple[int, int, int]
    classes: int
    max_batch: int | None = None

    def check(self, batch: np.ndarray) -> None:
        if not isinstance(batch, np.ndarray):
            raise TypeError(f"batch must be a numpy array, got {type(batch).__name__}")
        if batch.dtype != np.float32:
            raise TypeError(f"batch must be float32, got {batch.dtype}")
        expected = (self.channels, *self.tile)
        if batch.ndim != 5 or tuple(batch.shape[1:]) != expected or batch.shape[0] < 1:
            raise ValueError(f"batch shape {batch.shape} is not (N, {', '.join(map(str, expected))})")
        if self.max_batch is not None and batch.shape[0] > self.max_batch:
            raise ValueError(f"batch of {batch.shape[0]} exceeds this backend's maximum {self.max_batch}")


class Backend(ABC):
    """Base of all backends. Use as a context manager, or ``load()`` ... ``close()``."""

    name: ClassVar[str]

    def __init__(self, package: ModelPackage, device: str = "cpu", precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} must be one of {PRECISIONS}")
        self.package = package
        self.device = device
        self.precision = precision
        manifest = package.manifest
        self.input_spec = InputSpec(manifest.config.in_channels, manifest.tile, manifest.config.out_channels)
        self._loaded = False

    @classmethod
    def availability(cls, device: str) -> str | None:
        """None when this backend can run on ``device`` here, else a one-line reason with the fix."""
        return None

    @classmethod
    def supports(cls, package: ModelPackage, precision: str) -> bool:
        """Whether this backend can run ``package`` at ``precision`` (e.g. it has the files it needs)."""
        return True

    def load(self) -> "Backend":
        if not self._loaded:
            self._load()
            self._loaded = True
            log.info("loaded %s", self.describe())
        return self

    def default_batch_size(self) -> int:
        """Tiles per call when the caller names no batch size: 4 on a GPU, 2 on a CPU."""
        return 4 if self.device.startswith("cuda") else 2

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, K, D, H, W)`` float32 for normalised tiles ``(N, C, D, H, W)`` float32."""
        if not self._loaded:
            raise RuntimeError(f"{self.name} backend used before load()")
        self.input_spec.check(batch)
        logits = self._infer(batch)
        expected = (batch.shape[0], self.input_spec.classes, *self.input_spec.tile)
        if logits.shape != expected:
            raise RuntimeError(f"{self.name} returned logits of shape {logits.shape}, expected {expected}")
        return logits.astype(np.float32, copy=False)

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({self.precision})"

    def __enter__(self) -> "Backend":
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...

    def _close(self) -> None:
        """Release resources; backends holding none need not override."""
