"""What the bench times and what it records: configurations, shared settings, records, the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from tpem_seg.errors import InputError
from tpem_seg.runtime.backends import BACKENDS, BackendSpec
from tpem_seg.runtime.compare import Agreement

BASELINE = "baseline"
NATIVE = "native"  # the native runtime, libtpem through tpem_seg_cpp


@dataclass(frozen=True)
class BenchConfig:
    """One configuration to time.

    backend: ``baseline`` (MONAI sliding window over the torch backend, eager fp32), ``torch``,
    ``onnxruntime``, ``openvino``, ``tensorrt`` or ``native`` (libtpem through tpem_seg_cpp, fp32; threads
    as onnxruntime's); precision: fp32, fp16, bf16, or int8 (onnxruntime: a
    statically quantised QDQ copy of the model); compile / cuda_graphs / channels_last /
    cast_weights: torch backend options; spinning: onnxruntime's; threads: the backend's intra-op threads.
    """

    backend: str
    precision: str = "fp32"
    device: str = "cpu"
    compile: bool = False
    cuda_graphs: bool = False
    channels_last: bool = False
    cast_weights: bool = False
    spinning: bool | None = None
    threads: int | None = None
    label: str | None = None  # a name of its own, e.g. for an injected backend

    @property
    def name(self) -> str:
        """``backend-precision[-flag...]``, flags: compile, graphs, cl (channels-last), cast (weights cast to
        the precision instead of autocast), nospin, t<N> (intra-op threads); ``@cuda`` on a GPU.
        :meth:`parse` reads it back."""
        if self.label:
            return self.label
        if self.backend == BASELINE:
            return BASELINE
        flags = [f for f, on in (("compile", self.compile), ("graphs", self.cuda_graphs),
                                 ("cl", self.channels_last), ("cast", self.cast_weights),
                                 ("nospin", self.spinning is False)) if on]
        flags += [f"t{self.threads}"] if self.threads else []
        return "-".join([self.backend, self.precision, *flags]) + ("" if self.device == "cpu" else f"@{self.device}")

    @classmethod
    def parse(cls, name: str, device: str = "cpu") -> "BenchConfig":
        """The configuration :attr:`name` describes, e.g. ``torch-bf16-cl`` or ``onnxruntime-fp32-nospin-t1``."""
        parts = name.split("@")[0].split("-")
        if len(parts) < 2 or parts[0] not in (*BACKENDS, NATIVE):
            raise InputError(f"configuration {name!r} must read BACKEND-PRECISION[-FLAG...], e.g. torch-bf16-cl")
        kwargs: dict = {}
        switches = {"compile": ("compile", True), "graphs": ("cuda_graphs", True), "cl": ("channels_last", True),
                    "cast": ("cast_weights", True), "nospin": ("spinning", False)}
        for flag in parts[2:]:
            if flag in switches:
                field_name, value = switches[flag]
                kwargs[field_name] = value
            elif flag[:1] == "t" and flag[1:].isdigit():
                kwargs["threads"] = int(flag[1:])
            else:
                raise InputError(f"unknown flag {flag!r} in {name!r}: use {', '.join(switches)}, t<N>")
        return cls(parts[0], parts[1], device, **kwargs)

    def spec(self) -> BackendSpec:
        """The backend this configuration runs: only the options it switches on, so a backend is
        never handed another's (the backend class says which it takes)."""
        flags = {"compile": self.compile, "cuda_graphs": self.cuda_graphs, "channels_last": self.channels_last,
                 "cast_weights": self.cast_weights}
        options = {k: v for k, v in flags.items() if v}
        if self.spinning is not None:
            options["spinning"] = self.spinning
        if self.threads:
            options["threads"] = self.threads
        return BackendSpec(self.backend, self.device, self.precision, options)


@dataclass(frozen=True)
class BenchSettings:
    """What all configurations share: tiles, blending, batch, repeats.

    batch_size None: each backend's default (on a CPU 2, and up to 8 small tiles for torch bf16; on a
    GPU the torch path picks it from free memory, others 4). The baseline's ``sw_batch_size`` is
    ``baseline_batch_size``, else ``batch_size``, else 2 (CPU) or 4 (GPU).
    ``budget_s``: configurations not yet warmed up when this many seconds have passed are skipped.
    ``peak_*``: the matmul peak measurement (:func:`~tpem_seg.runtime.flops.measure_matmul_peak`).
    """

    overlap: float = 0.25
    sigma_scale: float = 0.125
    batch_size: int | None = None
    baseline_batch_size: int | None = None
    warmup: int = 1
    repeats: int = 3
    network_repeats: int | None = None
    calibration_tiles: int = 2
    budget_s: float | None = None
    peak_size: int | None = None
    peak_repeats: int = 5
    peak_min_seconds: float = 0.3

    def baseline_batch(self, device: str) -> int:
        return self.baseline_batch_size or self.batch_size or (4 if device.startswith("cuda") else 2)


@dataclass
class Timing:
    """Seconds of repeated timed runs."""

    samples: list[float]

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def spread(self) -> float:
        """(max - min) / median."""
        return float((max(self.samples) - min(self.samples)) / self.median) if self.samples else 0.0

    def to_dict(self) -> dict:
        return {"median": self.median, "min": min(self.samples), "max": max(self.samples),
                "spread": self.spread, "samples": list(self.samples)}


@dataclass
class BenchRecord:
    """The figures of one configuration (None where not measured).

    agreement: against the baseline on the whole volume (:mod:`tpem_seg.runtime.compare`);
    agrees: within :data:`~tpem_seg.runtime.compare.LIMITS` for the configuration's precision.
    """

    name: str
    config: BenchConfig
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    description: str = ""
    batch_size: int | None = None
    tiles: int = 0
    voxels: int = 0
    load_seconds: float | None = None
    first_run_seconds: float | None = None
    end_to_end: Timing | None = None
    network: Timing | None = None
    voxels_per_s: float | None = None
    speedup: float | None = None
    network_tiles_per_s: float | None = None
    pipeline_efficiency: float | None = None
    load_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    run_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    run_gpu_mb: float | None = None
    achieved_flops: float | None = None
    peak_flops: float | None = None
    fraction_of_peak: float | None = None
    agreement: Agreement | None = None
    agrees: bool | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["config"] = asdict(self.config)
        d["end_to_end"] = self.end_to_end.to_dict() if self.end_to_end else None
        d["network"] = self.network.to_dict() if self.network else None
        return d


@dataclass
class BenchReport:
    """A whole benchmark: what ran where, and one record per configuration (the baseline first)."""

    command: str
    machine: dict
    input: dict
    package: dict
    settings: BenchSettings
    flops_per_tile: int
    matmul_peaks: dict[str, float]
    records: list[BenchRecord]
    started: str
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"command": self.command, "started": self.started, "seconds": self.seconds,
                "machine": self.machine, "input": self.input, "package": self.package,
                "settings": asdict(self.settings), "flops_per_tile": self.flops_per_tile,
                "matmul_peaks_flops_per_s": self.matmul_peaks,
                "records": [r.to_dict() for r in self.records]}

    def record(self, name: str) -> BenchRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(name)
