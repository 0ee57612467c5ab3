"""One interface over every inference backend (Polygraphy's runner idea).

A backend turns a batch of normalised tiles ``(N, C, D, H, W)`` float32 into
logits ``(N, K, D, H, W)`` float32. The base class checks shapes and dtypes and
the lifecycle; subclasses do only their own backend's work, and import their
heavy libraries inside their own module.

What a backend can do is declared once, on its class, and asked there by the factory,
the bench, the tuner and the GPU scripts alike:

- :meth:`Backend.precisions`: the precisions it has on a device;
- :meth:`Backend.unavailable`: None when it can run a package at a precision on a device
  with given options here, else one line saying why not and what to do;
- ``OPTIONS``: the keyword options its constructor takes (all reachable through
  :func:`~tpem_seg.runtime.backends.create_backend` and :class:`BackendSpec`);
- :attr:`Backend.supports_device_tensors` and :attr:`Backend.static_batch` on instances.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import numpy as np

from tpem_seg.models.package import ModelPackage

log = logging.getLogger(__name__)

#: Every precision a backend may declare; ``int8`` means a quantised copy of the ONNX graph.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class BackendSpec:
    """Which backend to build: a value, so a configuration can be named, cached, compared and logged.

    name: ``auto``, ``torch``, ``onnxruntime``, ``openvino`` or ``tensorrt``; device: ``auto``, ``cpu``,
    ``cuda`` or ``cuda:N``; precision: one of :data:`PRECISIONS`; options: the backend's own
    constructor options (its ``OPTIONS``), e.g. ``{"threads": 2}`` for ONNX Runtime or
    ``{"channels_last": True}`` for torch. Options are held read-only.
    """

    name: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def __hash__(self) -> int:
        return hash((self.name, self.device, self.precision, tuple(sorted(self.options.items()))))

    def replace(self, **changes) -> "BackendSpec":
        """A copy with fields changed; ``options`` given here are merged into the current ones."""
        options = {**self.options, **changes.pop("options", {})}
        fields = {"name": self.name, "device": self.device, "precision": self.precision, **changes}
        return BackendSpec(options=options, **fields)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "precision": self.precision, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BackendSpec":
        return cls(d["name"], d.get("device", "auto"), d.get("precision", "fp32"), d.get("options", {}))

    def line(self) -> str:
        """``name on device (precision, key=value...)``."""
        extras = [f"{k}={v}" for k, v in sorted(self.options.items())]
        return f"{self.name} on {self.device} ({', '.join([self.precision, *extras])})"


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
    """Base of all backends. Use as a context manager, or ``load()`` ... ``close()``.

    ``batch_size`` (an option every backend takes): the tiles per call the backend asks for when
    the caller names none (:meth:`default_batch_size`), e.g. the batch a tuning run chose.
    """

    name: ClassVar[str]
    #: Constructor options beyond package, device and precision (what :class:`BackendSpec` may carry).
    OPTIONS: ClassVar[tuple[str, ...]] = ("batch_size",)
    #: Batches smaller than this are padded to it (fixed shapes for compiled graphs); None: no padding.
    static_batch: int | None = None

    def __init__(self, package: ModelPackage, device: str = "cpu", precision: str = "fp32", *,
                 batch_size: int | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} must be one of {PRECISIONS}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.package = package
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        manifest = package.manifest
        self.input_spec = InputSpec(manifest.config.in_channels, manifest.tile, manifest.config.out_channels)
        self._loaded = False

    # -- capabilities (class level: asked before anything is built) ------------------------------------

    @classmethod
    def precisions(cls, device: str) -> tuple[str, ...]:
        """The precisions this backend has on ``device`` (``cpu`` or ``cuda[:N]``)."""
        return ("fp32",)

    @classmethod
    def unavailable(cls, device: str = "cpu", precision: str = "fp32", package: ModelPackage | None = None,
                    **options) -> str | None:
        """None when this backend can run ``package`` (None: any) at ``precision`` on ``device`` with
        ``options`` on this machine, else a one-line reason naming the fix. Subclasses extend it
        (libraries, drivers, files in the package, options that need a device)."""
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            return (f"the {cls.name} backend has no option(s) {', '.join(unknown)}; "
                    f"it takes {', '.join(cls.OPTIONS)}")
        offered = cls.precisions(device)
        if precision not in offered:
            where = "a GPU" if device.startswith("cuda") else "the CPU"
            return f"the {cls.name} backend runs {' or '.join(offered)} on {where}, not {precision}"
        return None

    @property
    def supports_device_tensors(self) -> bool:
        """Whether :meth:`infer_tensor` takes and returns tensors on a GPU (the Segmenter's GPU path)."""
        return False

    # -- lifecycle -------------------------------------------------------------------------------------

    def load(self) -> "Backend":
        if not self._loaded:
            self._load()
            self._loaded = True
            log.info("loaded %s", self.describe())
        return self

    def default_batch_size(self) -> int:
        """Tiles per call when the caller names no batch size: ``batch_size`` where set, else
        4 on a GPU and 2 on a CPU."""
        if self.batch_size:
            return self.batch_size
        return 4 if self.device.startswith("cuda") else 2

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, K, D, H, W)`` float32 for normalised tiles ``(N, C, D, H, W)`` float32."""
        return self._checked(self._infer, batch)

    @property
    def supports_mc_dropout(self) -> bool:
        """Whether :meth:`infer_mc` can run Monte-Carlo dropout passes of this package here."""
        return False

    def start_mc(self, seed: int = 0) -> None:
        """Restart the dropout draws of :meth:`infer_mc` from ``seed``, so a run's passes are reproducible."""
        raise NotImplementedError(f"the {self.name} backend cannot run Monte-Carlo dropout passes")

    def infer_mc(self, batch: np.ndarray) -> np.ndarray:
        """Logits of one Monte-Carlo dropout pass (dropout active, new masks at every call), as :meth:`infer`;
        only where :attr:`supports_mc_dropout`, after :meth:`start_mc`."""
        if not self.supports_mc_dropout:
            raise NotImplementedError(f"the {self.name} backend cannot run Monte-Carlo dropout passes of "
                                      f"{self.package.name}")
        return self._checked(self._infer_mc, batch)

    def _checked(self, run, batch: np.ndarray) -> np.ndarray:
        """``run(batch)`` after the lifecycle and input checks, its logits' shape checked, as float32."""
        if not self._loaded:
            raise RuntimeError(f"{self.name} backend used before load()")
        self.input_spec.check(batch)
        logits = run(batch)
        expected = (batch.shape[0], self.input_spec.classes, *self.input_spec.tile)
        if logits.shape != expected:
            raise RuntimeError(f"{self.name} returned logits of shape {logits.shape}, expected {expected}")
        return logits.astype(np.float32, copy=False)

    def _infer_mc(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def infer_tensor(self, x):
        """Logits for a batch already on this backend's device; only where :attr:`supports_device_tensors`."""
        raise NotImplementedError(f"the {self.name} backend takes numpy batches only (infer)")

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
