"""Benchmarks: tpem-seg configurations against the PyTorch baseline a lab runs today.

The baseline is MONAI's ``sliding_window_inference`` over the package's own weights (``model.pt``)
in PyTorch eager FP32, with the same tile, overlap and Gaussian blending, on the same volume
normalised the same way. Every configuration (backend x precision x options) segments the same
volume through :class:`~tpem_seg.runtime.segmenter.Segmenter`.

Method (nanoGPT ``bench.py`` style): every configuration is loaded, then warmed up (its first run
returns logits, which give the agreement figures and include any compilation), then the timed
repeats run interleaved (round r: every configuration once, end to end and then its network alone),
so a change in the machine's load hits all of them, and both figures of one configuration, alike;
medians and spread are reported. CUDA is synchronised around every timing;
end-to-end runs return host arrays, so they are synchronous by construction.

Per configuration (:class:`BenchRecord`): end-to-end voxels/s and the ratio to the baseline;
network-only time for the same tiles (batches already in the backend's memory) and the pipeline
efficiency, network-only / end-to-end; peak host RSS and GPU memory; achieved FLOP/s against the
measured matmul peak at the same precision; agreement with the baseline (Dice of labels, max abs
difference of probabilities). The machine goes into every report.

torch and MONAI are needed (the baseline is PyTorch); they are imported inside functions.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from tpem_seg.errors import InputError
from tpem_seg.io import Volume, read_volume
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.devices import cpu_count, cpu_model, cpu_supports_bf16, cuda_device_count
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.runtime.outputs import to_probabilities
from tpem_seg.runtime.pipeline import TileBatch, iter_tiles, make_plan

log = logging.getLogger(__name__)

BASELINE = "baseline"
#: Agreement a configuration must reach against the baseline: (min voxel label agreement,
#: max abs probability difference), by precision. fp32 differs only by summation order; reduced
#: precisions are allowed a visible but small drift.
AGREEMENT_LIMITS = {"fp32": (0.999, 1e-3), "bf16": (0.98, 0.2), "fp16": (0.99, 0.1), "int8": (0.95, 0.5)}


# -- configurations and records -------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """One configuration to time.

    backend: ``baseline`` (MONAI sliding window, PyTorch eager fp32), ``torch``, ``onnxruntime``
    or ``tensorrt``; precision: fp32, fp16, bf16, or int8 (onnxruntime: a statically quantised
    QDQ copy of the model); compile / cuda_graphs / channels_last / cast_weights: torch backend options.
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
        the precision instead of autocast), nospin, t<N> (ONNX Runtime threads); ``@cuda`` on a GPU.
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
        if len(parts) < 2 or parts[0] not in ("torch", "onnxruntime", "tensorrt"):
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
class Agreement:
    """Labels and probabilities of a configuration against the baseline's, on the whole volume.

    dice: per class name, 2|A∩B| / (|A| + |B|) of the voxels labelled that class (1 when both are
    empty); mean_dice: over the foreground classes either labels; voxel_agreement: fraction of
    voxels with equal labels; max_abs_prob_diff: over all voxels and classes.
    """

    dice: dict[str, float]
    mean_dice: float
    voxel_agreement: float
    max_abs_prob_diff: float
    ok: bool


@dataclass
class BenchRecord:
    """The figures of one configuration (None where not measured)."""

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


# -- the machine -------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def machine_info(device: str = "cpu") -> dict:
    """CPU model and cores, load, memory, GPU, library versions: what a timing depends on."""
    info: dict = {"cpu": cpu_model(), "cores": cpu_count(), "native_bf16": cpu_supports_bf16(),
                  "python": platform.python_version(), "platform": platform.platform(),
                  "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                  "cuda_gpus": cuda_device_count()}
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    info["versions"] = {d: _version(d) for d in ("tpem-seg", "numpy", "torch", "monai", "onnxruntime",
                                                   "onnxruntime-gpu", "tensorrt")}
    import torch

    info["torch_threads"] = torch.get_num_threads()
    info["env"] = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = {"name": props.name, "memory_gb": round(props.total_memory / 1e9, 1),
                       "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version()}
    return info


# -- the input ---------------------------------------------------------------------------------------


def synthetic_volume(shape_zyx: Sequence[int], channels: int, seed: int = 0) -> np.ndarray:
    """A reproducible ``(C, Z, Y, X)`` uint16 stack: dim noisy background, smooth clutter and bright
    blobs (somata-like) and lines (vessel-like) in every channel, so the network sees structure."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    z, y, x = (int(s) for s in shape_zyx)
    out = np.empty((channels, z, y, x), dtype=np.uint16)
    for c in range(channels):
        signal = np.zeros((z, y, x), dtype=np.float32)
        n_blobs = max(1, z * y * x // 40_000)
        signal[rng.integers(0, z, n_blobs), rng.integers(0, y, n_blobs), rng.integers(0, x, n_blobs)] = 1.0
        for _ in range(max(1, (y + x) // 64)):  # lines along y or x at random z, y/x
            zi, yi, xi = rng.integers(0, z), rng.integers(0, y), rng.integers(0, x)
            if rng.random() < 0.5:
                signal[zi, :, xi] = 0.05
            else:
                signal[zi, yi, :] = 0.05
        signal = ndimage.gaussian_filter(signal, sigma=(1.0, 3.0, 3.0))
        signal *= 3000.0 / max(float(signal.max()), 1e-6)
        signal += 200.0 + 40.0 * rng.standard_normal((z, y, x), dtype=np.float32)
        out[c] = np.clip(signal, 0, 65535).astype(np.uint16)
    return out


def parse_crop(text: str | None) -> tuple[slice, slice, slice] | None:
    """``"0:30,0:256,0:256"`` -> z, y, x slices (empty bounds allowed, e.g. ``":,:256,:256"``)."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        slices = tuple(slice(*[int(v) if v else None for v in p.split(":")]) for p in parts)
    except ValueError:
        slices = ()
    if len(slices) != 3 or any(p.count(":") != 1 for p in parts):
        raise InputError(f"--crop {text!r} must be three start:stop ranges z,y,x, e.g. 0:30,0:256,0:256")
    return slices  # type: ignore[return-value]


def load_input(spec: str, channels: int, crop: tuple[slice, slice, slice] | None = None,
               axes: str | None = None, seed: int = 0) -> tuple[Volume, dict]:
    """The benchmark volume, in memory as ``CZYX``, and a description of it for the report.

    ``spec`` is a volume file, or ``synthetic:Z,Y,X`` for :func:`synthetic_volume` with the
    model's ``channels``.
    """
    if spec.startswith("synthetic:"):
        try:
            shape = tuple(int(v) for v in spec.split(":", 1)[1].split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"{spec!r} must be synthetic:Z,Y,X with three positive sizes, e.g. synthetic:64,256,256")
        data, spacing, source = synthetic_volume(shape, channels, seed), None, f"synthetic (seed {seed})"
    else:
        volume = read_volume(spec, axes=axes)
        data, spacing, source = volume.read_czyx(), volume.spacing, str(spec)
    if crop is not None:
        data = np.ascontiguousarray(data[(slice(None), *crop)])
        if 0 in data.shape:
            raise InputError(f"the crop leaves an empty volume ({data.shape}); check --crop")
    description = {"source": source, "shape_czyx": list(data.shape), "dtype": str(data.dtype),
                   "crop": None if crop is None else [[s.start, s.stop] for s in crop],
                   "spacing": list(spacing) if spacing else None}
    return Volume(data, "CZYX", spacing), description


# -- memory ------------------------------------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:  # not Linux
        return None
    return None


class HostMemory:
    """This process's resident memory (MB): current, and the peak since :meth:`reset_peak`.

    The peak is Linux's VmHWM, reset through ``/proc/self/clear_refs`` so each configuration gets
    its own; where that is impossible the peak is the process's lifetime peak (``scope``).
    """

    def __init__(self) -> None:
        self.scope = "since reset"

    def current_mb(self) -> float | None:
        kb = _status_kb("VmRSS")
        return kb / 1024 if kb is not None else None

    def reset_peak(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
        except OSError as err:
            if self.scope != "process lifetime":
                log.warning("cannot reset the peak RSS (%s): peaks are the process's lifetime peak", err)
            self.scope = "process lifetime"

    def peak_mb(self) -> float | None:
        kb = _status_kb("VmHWM")
        if kb is None:
            import resource

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024


class GpuMemorySampler:
    """Samples the device's used memory (``cudaMemGetInfo``, MB) every ``interval`` s in a thread;
    ``peak_mb`` is the largest seen. Device-wide: it sees ONNX Runtime's and TensorRT's memory too."""

    def __init__(self, device: str, interval: float = 0.005):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def used_mb(self) -> float:
        free, total = self._torch.cuda.mem_get_info(self.device)
        return (total - free) / 2**20

    def __enter__(self) -> "GpuMemorySampler":
        self.peak_mb = self.used_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tpem-gpu-mem", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.used_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, self.used_mb())


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


# -- runners -----------------------------------------------------------------------------------------


class Runner(Protocol):
    """What the bench drives for one configuration."""

    config: BenchConfig

    def availability(self) -> str | None: ...
    def load(self) -> None: ...
    def describe(self) -> str: ...
    def labels(self, volume: Volume) -> np.ndarray: ...
    def logits(self, volume: Volume) -> np.ndarray: ...
    def batch_size(self) -> int: ...
    def prepare_network(self, tiles: np.ndarray) -> None: ...
    def network_pass(self) -> None: ...
    def close(self) -> None: ...


class BaselineRunner:
    """MONAI ``sliding_window_inference`` over the package's weights, PyTorch eager FP32.

    What a lab runs today: normalise the volume (the package's normalisation, whole volume),
    one tensor on the device, sliding window with Gaussian blending, argmax, labels to the host.
    """

    def __init__(self, package: ModelPackage, settings: BenchSettings, device: str = "cpu"):
        self.package = package
        self.settings = settings
        self.config = BenchConfig(BASELINE, "fp32", device)
        self._batches: list = []

    def availability(self) -> str | None:
        from tpem_seg.runtime.backends.torch_backend import TorchBackend

        if self.package.weights_path is None:
            return f"package {self.package.name} carries no PyTorch weights (model.pt): no baseline"
        return TorchBackend.availability(self.config.device)

    def load(self) -> None:
        import torch

        from tpem_seg.models.checkpoint import clean_state_dict
        from tpem_seg.models.unetr import build_unetr

        self._torch = torch
        state = torch.load(self.package.weights_path, map_location="cpu", weights_only=True)
        model = build_unetr(self.package.manifest.config)
        model.load_state_dict(clean_state_dict(state))
        self._device = torch.device(self.config.device)
        self.model = model.to(self._device).eval()

    def describe(self) -> str:
        return f"MONAI sliding_window_inference, PyTorch eager fp32 on {self.config.device}"

    def batch_size(self) -> int:
        return self.settings.baseline_batch(self.config.device)

    def _logits(self, volume: Volume):
        from monai.inferers import sliding_window_inference

        torch = self._torch
        manifest = self.package.manifest
        normalizer = fit_normalizer(volume, manifest.normalization)
        x = torch.from_numpy(normalizer(volume.read_czyx()))[None].to(self._device)
        with torch.inference_mode():
            logits = sliding_window_inference(
                x, roi_size=manifest.tile, sw_batch_size=self.batch_size(), predictor=self.model,
                overlap=self.settings.overlap, mode="gaussian", sigma_scale=self.settings.sigma_scale,
                padding_mode="constant", cval=0.0)
        return logits[0]

    def logits(self, volume: Volume) -> np.ndarray:
        return self._logits(volume).float().cpu().numpy()

    def labels(self, volume: Volume) -> np.ndarray:
        from tpem_seg.runtime.gpu import finish_tensor

        logits = self._logits(volume)
        with self._torch.inference_mode():
            return finish_tensor(logits, None, self.package.manifest.activation, "labels").cpu().numpy()

    def prepare_network(self, tiles: np.ndarray) -> None:
        b = self.batch_size()
        self._batches = [self._torch.from_numpy(tiles[i:i + b]).to(self._device) for i in range(0, len(tiles), b)]

    def network_pass(self) -> None:
        with self._torch.inference_mode():
            for batch in self._batches:
                self.model(batch)
        _synchronize(self.config.device)

    def close(self) -> None:
        self._batches = []
        self.model = None


class SegmenterRunner:
    """A tpem-seg configuration: a backend in a :class:`Segmenter` (labels, and logits for agreement).

    ``backend``: use this backend instance instead of building one from the config (tests inject
    faulty ones); ``workdir``: where an int8 model is written.
    """

    def __init__(self, package: ModelPackage, config: BenchConfig, settings: BenchSettings,
                 backend=None, workdir: Path | None = None, calibration: np.ndarray | None = None):
        self.package = package
        self.config = config
        self.settings = settings
        self.backend = backend
        self.workdir = workdir
        self.calibration = calibration
        self._batches: list = []
        self._batch_size: int | None = None

    def availability(self) -> str | None:
        if self.backend is not None:
            return None
        from tpem_seg.runtime.backends import backend_class

        config = self.config
        if config.backend == "torch" and config.device == "cpu" and config.precision == "fp16":
            return "the torch backend runs fp16 on GPUs only"
        if config.precision == "int8" and config.backend != "onnxruntime":
            return f"int8 is benchmarked with onnxruntime only, not {config.backend}"
        if config.backend == "onnxruntime" and config.precision in ("fp16", "bf16") and config.device == "cpu":
            return f"onnxruntime on the CPU runs fp32 (and int8 here), not {config.precision}"
        if config.backend == "onnxruntime" and config.precision == "fp16":
            from tpem_seg.runtime.backends.ort_backend import installed_providers

            if "TensorrtExecutionProvider" not in installed_providers():
                return "onnxruntime runs fp16 only through its TensorRT provider, not installed here"
        if config.backend == "tensorrt" and config.precision not in ("fp16", "fp32"):
            return f"TensorRT engines are fp16 or fp32, not {config.precision}"
        if config.cuda_graphs and not config.device.startswith("cuda"):
            return "CUDA graphs need a GPU"
        if (config.threads or config.spinning is not None) and config.backend != "onnxruntime":
            return "thread options (t<N>, nospin) are onnxruntime's; torch threads are process-wide"
        try:
            return backend_class(config.backend).availability(config.device)
        except ImportError as err:
            return f"{config.backend} not importable ({err})"

    def load(self) -> None:
        from tpem_seg.runtime.segmenter import Segmenter

        if self.backend is None:
            self.backend = self._make_backend()
        self.backend.load()
        # The voxels as they are, as the baseline sees them: no resampling to the package's voxel size.
        options = {"overlap": self.settings.overlap, "sigma_scale": self.settings.sigma_scale,
                   "batch_size": self.settings.batch_size, "resample": False}
        self._labels = Segmenter(self.package, self.backend, output="labels", **options)
        self._logits = Segmenter(self.package, self.backend, output="logits", **options)

    def _make_backend(self):
        from tpem_seg.runtime.backends import backend_class

        config = self.config
        if config.backend == "torch":
            from tpem_seg.runtime.backends.torch_backend import TorchBackend

            backend = TorchBackend(self.package, device=config.device, precision=config.precision,
                                   compile=config.compile, cuda_graphs=config.cuda_graphs,
                                   channels_last=config.channels_last, cast_weights=config.cast_weights)
            if config.compile or config.cuda_graphs:
                # Fixed shapes for compiled graphs: pad the last, smaller batch of a row to the full batch.
                backend.static_batch = self.settings.batch_size or backend.default_batch_size()
            return backend
        if config.backend == "onnxruntime" and config.precision == "int8":
            from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend
            from tpem_seg.runtime.quantize import quantize_static_int8

            if self.calibration is None or self.workdir is None:
                raise RuntimeError("int8 needs calibration tiles and a working folder")
            path = quantize_static_int8(self.package.onnx_path, self.workdir / f"{self.package.name}.int8.onnx",
                                        self.calibration)
            return OnnxRuntimeBackend(self.package, device=config.device, precision="fp32", model_path=path,
                                      variant="int8 static QDQ", threads=config.threads, spinning=config.spinning)
        if config.backend == "onnxruntime":
            from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend

            return OnnxRuntimeBackend(self.package, device=config.device, precision=config.precision,
                                      threads=config.threads, spinning=config.spinning)
        return backend_class(config.backend)(self.package, device=config.device, precision=config.precision)

    def describe(self) -> str:
        return self.backend.describe() if self.backend is not None else self.config.name

    def labels(self, volume: Volume) -> np.ndarray:
        out = self._labels.segment(volume)
        self._batch_size = self._labels.last_summary.extra.get("batch_size", self._batch_size)
        return out

    def logits(self, volume: Volume) -> np.ndarray:
        out = self._logits.segment(volume)
        self._batch_size = self._logits.last_summary.extra.get("batch_size", self._batch_size)
        return out

    def batch_size(self) -> int:
        return self._batch_size or self.settings.baseline_batch(self.config.device)

    def prepare_network(self, tiles: np.ndarray) -> None:
        b = self.batch_size()
        batches = [np.ascontiguousarray(tiles[i:i + b]) for i in range(0, len(tiles), b)]
        if getattr(self.backend, "supports_device_tensors", False):
            import torch

            batches = [torch.from_numpy(t).to(self.backend.device) for t in batches]
        self._batches = batches

    def network_pass(self) -> None:
        if getattr(self.backend, "supports_device_tensors", False):
            for batch in self._batches:
                self.backend.infer_tensor(batch)
        else:
            for batch in self._batches:
                self.backend.infer(batch)
        _synchronize(self.config.device)

    def close(self) -> None:
        self._batches = []
        if self.backend is not None:
            self.backend.close()


# -- agreement ---------------------------------------------------------------------------------------


def dice_per_class(labels: np.ndarray, reference: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each class's voxels between two label volumes (1.0 where both lack the class)."""
    out = []
    for k in range(n_classes):
        a, b = labels == k, reference == k
        total = int(a.sum()) + int(b.sum())
        out.append(1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total)
    return out


def agreement(labels: np.ndarray, reference_labels: np.ndarray, probabilities: np.ndarray,
              reference_probabilities: np.ndarray, classes: Sequence[str], precision: str,
              activation: str = "softmax") -> Agreement:
    """Agreement of one configuration's labels ``(Z, Y, X)`` and probabilities ``(K, Z, Y, X)``
    with the baseline's; ``ok`` when within :data:`AGREEMENT_LIMITS` for ``precision``."""
    n = len(classes) + (1 if activation == "sigmoid" else 0)
    names = list(classes) if activation == "softmax" else ["background", *classes]
    dice = dice_per_class(labels, reference_labels, n)
    present = [d for k, d in enumerate(dice) if k > 0 and ((labels == k).any() or (reference_labels == k).any())]
    voxel_agreement = float(np.mean(labels == reference_labels))
    max_diff = float(np.abs(probabilities - reference_probabilities).max())
    min_agree, max_prob = AGREEMENT_LIMITS.get(precision, AGREEMENT_LIMITS["int8"])
    return Agreement(dict(zip(names, dice)), float(np.mean(present)) if present else 1.0, voxel_agreement,
                     max_diff, voxel_agreement >= min_agree and max_diff <= max_prob)


# -- the benchmark -----------------------------------------------------------------------------------


#: Precisions each backend has on (backend, on a GPU): other combinations are not offered.
MEANINGFUL_PRECISIONS = {
    ("torch", False): ("fp32", "bf16"), ("torch", True): ("fp32", "fp16", "bf16"),
    ("onnxruntime", False): ("fp32", "int8"), ("onnxruntime", True): ("fp32", "fp16"),
    ("tensorrt", False): ("fp32", "fp16"), ("tensorrt", True): ("fp32", "fp16"),
}


def default_configs(device: str, backends: Sequence[str], precisions: Sequence[str], compile: bool | None = None,
                    cuda_graphs: bool | None = None, channels_last: bool = False) -> list[BenchConfig]:
    """The cross product of ``backends`` and ``precisions`` on ``device``, less the pairs a backend does
    not have (:data:`MEANINGFUL_PRECISIONS`; TensorRT on a CPU stays, to be reported as unavailable).

    On a GPU, torch at fp16/bf16 runs with ``torch.compile`` and CUDA graphs unless switched off
    (``compile``/``cuda_graphs`` None means: on for a GPU, off for a CPU, where compiling takes
    minutes); fp32 torch stays eager, the configuration closest to the baseline.
    """
    gpu = device.startswith("cuda")
    compile = gpu if compile is None else compile
    cuda_graphs = gpu if cuda_graphs is None else cuda_graphs
    configs = []
    for backend in backends:
        for precision in precisions:
            if precision not in MEANINGFUL_PRECISIONS[(backend, gpu)]:
                continue
            reduced = backend == "torch" and precision in ("fp16", "bf16")
            configs.append(BenchConfig(backend, precision, device, compile=compile and reduced,
                                       cuda_graphs=cuda_graphs and reduced and gpu,
                                       channels_last=channels_last and backend == "torch"))
    return configs


def make_runners(package: ModelPackage, configs: Sequence[BenchConfig], settings: BenchSettings, device: str,
                 workdir: Path | None = None, calibration: np.ndarray | None = None) -> list:
    """The baseline's runner, then one per configuration."""
    return [BaselineRunner(package, settings, device)] + [
        SegmenterRunner(package, c, settings, workdir=workdir, calibration=calibration) for c in configs]


def plan_tiles_for(volume: Volume, package: ModelPackage, settings: BenchSettings) -> np.ndarray:
    """All normalised tiles ``(n, C, D, H, W)`` float32 of ``volume``, as the runs see them."""
    manifest = package.manifest
    normalizer = fit_normalizer(volume, manifest.normalization)
    plan = make_plan(volume.shape_zyx, manifest.tile, settings.overlap)
    batches = [item.tiles for item in iter_tiles(volume, plan, normalizer, None, len(plan.yx_origins))
               if isinstance(item, TileBatch)]
    return np.concatenate(batches)


def run_bench(volume: Volume, package: ModelPackage, runners: Sequence, settings: BenchSettings, *,
              command: str = "", input_info: dict | None = None,
              progress: Callable[[str], None] = lambda line: None) -> BenchReport:
    """Run the baseline (``runners[0]``) and every other runner on ``volume``; see the module docstring.

    A configuration that cannot run here is recorded as skipped with the reason; one that raises is
    recorded as failed with the error (and logged with its traceback), and the others go on.
    """
    from tpem_seg.runtime.flops import unetr_flops

    started_at = time.strftime("%Y-%m-%d %H:%M:%S %z")
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    t_start = time.perf_counter()
    device = runners[0].config.device
    manifest = package.manifest
    host = HostMemory()
    records = {r.config.name: BenchRecord(r.config.name, r.config) for r in runners}
    if len(records) != len(runners):
        raise ValueError(f"configuration names repeat: {[r.config.name for r in runners]}")
    tiles = plan_tiles_for(volume, package, settings)
    n_tiles, n_voxels = len(tiles), int(np.prod(volume.shape_zyx))
    flops_per_tile = unetr_flops(manifest.config)
    progress(f"{n_tiles} tiles of {'x'.join(map(str, manifest.tile))}, {flops_per_tile / 1e9:.1f} GFLOP each")

    gpu_idle_mb = GpuMemorySampler(device).used_mb() if device.startswith("cuda") else None
    precisions = {r.config.precision for r in runners}
    peaks_start = _matmul_peaks(device, precisions, settings)
    active = _load_all(runners, records, host, settings, t_start, progress)
    if not active or active[0] is not runners[0]:
        raise RuntimeError(f"the baseline could not run: {records[runners[0].config.name].reason}")

    reference = _warm_up(active, records, volume, manifest, settings, t_start, progress)
    active = [r for r in active if records[r.config.name].status == "ok"]
    last_labels = _timed_runs(active, records, volume, tiles, settings, host, device, progress)
    active = [r for r in active if records[r.config.name].status == "ok"]
    # A peak is the best seen: measured before and after, as the machine's load may change.
    peaks_end = _matmul_peaks(device, precisions, settings)
    peaks = {p: max(peaks_start[p], peaks_end[p]) for p in peaks_start}

    baseline = records[runners[0].config.name]
    for runner in active:
        rec = records[runner.config.name]
        if rec.status != "ok":
            continue
        rec.tiles, rec.voxels = n_tiles, n_voxels
        _derive(rec, baseline, n_tiles, n_voxels, flops_per_tile, peaks, gpu_idle_mb)
        if runner is not runners[0]:
            probs, labels = reference
            rec.agreement = agreement(last_labels[runner.config.name], labels, rec.extra.pop("_probabilities"),
                                      probs, manifest.classes, runner.config.precision, manifest.activation)
    baseline.extra.pop("_probabilities", None)
    for runner in runners:
        if records[runner.config.name].status == "ok":
            runner.close()
    report = BenchReport(command, machine_info(device), input_info or {}, _package_info(package), settings,
                         flops_per_tile, peaks, [records[r.config.name] for r in runners], started_at)
    report.machine["load_average"] = load_start
    report.machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report.seconds = time.perf_counter() - t_start
    return report


def _load_all(runners, records, host: HostMemory, settings: BenchSettings, t_start: float, progress) -> list:
    active = []
    for runner in runners:
        rec = records[runner.config.name]
        reason = runner.availability()
        if reason is None and active and settings.budget_s is not None \
                and time.perf_counter() - t_start > settings.budget_s:
            reason = f"time budget of {settings.budget_s:.0f} s spent before it was loaded"
        if reason is not None:
            rec.status, rec.reason = "skipped", reason
            progress(f"{rec.name}: skipped ({reason})")
            continue
        before = host.current_mb()
        started = time.perf_counter()
        if _guarded(rec, runner.load) is not FAILED:
            rec.load_seconds = time.perf_counter() - started
            after = host.current_mb()
            rec.load_rss_mb = after - before if after is not None and before is not None else None
            rec.description = runner.describe()
            active.append(runner)
    return active


def _warm_up(active, records, volume, manifest, settings: BenchSettings, t_start: float, progress):
    """First runs (logits: agreement, compilation); returns the baseline's (probabilities, labels)."""
    reference = None
    for runner in active:
        rec = records[runner.config.name]
        if settings.budget_s is not None and time.perf_counter() - t_start > settings.budget_s and reference:
            rec.status, rec.reason = "skipped", f"time budget of {settings.budget_s:.0f} s spent before its warm-up"
            progress(f"{rec.name}: skipped ({rec.reason})")
            continue
        started = time.perf_counter()
        logits = _guarded(rec, lambda: runner.logits(volume))
        if logits is FAILED:
            continue
        rec.first_run_seconds = time.perf_counter() - started
        probabilities = to_probabilities(logits, manifest.activation)
        rec.extra["_probabilities"] = probabilities
        if reference is None:
            reference = (probabilities, _labels_from_probabilities(probabilities, manifest.activation))
        for _ in range(settings.warmup - 1):
            if _guarded(rec, lambda: runner.labels(volume)) is FAILED:
                break
        rec.description = runner.describe()
        progress(f"{rec.name}: warm-up {rec.first_run_seconds:.1f} s")
    if reference is None:
        raise RuntimeError(f"the baseline failed: {records[active[0].config.name].reason}")
    return reference


def _labels_from_probabilities(probabilities: np.ndarray, activation: str) -> np.ndarray:
    from tpem_seg.runtime.outputs import to_labels

    return to_labels(probabilities, activation)


def _timed_runs(active, records, volume, tiles: np.ndarray, settings: BenchSettings, host: HostMemory,
                device: str, progress) -> dict[str, np.ndarray]:
    """Interleaved rounds: every configuration runs end to end (labels), then its network alone on
    the same tiles, right after, so both see the same load. Returns the last labels of each."""
    for runner in active:
        if runner.config.name in records and records[runner.config.name].status == "ok":
            _guarded(records[runner.config.name], lambda: runner.prepare_network(tiles))
    e2e: dict[str, list[float]] = {r.config.name: [] for r in active}
    net: dict[str, list[float]] = {r.config.name: [] for r in active}
    last: dict[str, np.ndarray] = {}
    network_repeats = settings.network_repeats or settings.repeats
    rounds = max(settings.repeats, network_repeats)
    for round_ in range(rounds):
        for runner in active:
            rec = records[runner.config.name]
            if rec.status == "ok" and round_ < settings.repeats:
                labels = _end_to_end(runner, rec, volume, host, device)
                if labels is not FAILED:
                    e2e[rec.name].append(labels[1])
                    last[rec.name] = labels[0]
            if rec.status == "ok" and round_ < network_repeats:
                _synchronize(device)
                started = time.perf_counter()
                if _guarded(rec, runner.network_pass) is not FAILED:
                    net[rec.name].append(time.perf_counter() - started)
            if rec.status == "ok":
                progress(f"round {round_ + 1}/{rounds} {rec.name}: end-to-end "
                         f"{e2e[rec.name][-1] if e2e[rec.name] else float('nan'):.2f} s, network "
                         f"{net[rec.name][-1] if net[rec.name] else float('nan'):.2f} s")
    for runner in active:
        rec = records[runner.config.name]
        if rec.status == "ok":
            rec.end_to_end = Timing(e2e[rec.name]) if e2e[rec.name] else None
            rec.network = Timing(net[rec.name]) if net[rec.name] else None
            rec.batch_size = runner.batch_size()
        runner.prepare_network(tiles[:0])  # release the batches
    return last


def _end_to_end(runner, rec: BenchRecord, volume, host: HostMemory, device: str):
    """One timed end-to-end run with its memory figures: ``(labels, seconds)``, or FAILED."""
    before = host.current_mb()
    host.reset_peak()
    sampler = GpuMemorySampler(device) if device.startswith("cuda") else None
    gpu_before = sampler.used_mb() if sampler else None
    started = time.perf_counter()
    if sampler:
        with sampler:
            labels = _guarded(rec, lambda: runner.labels(volume))
    else:
        labels = _guarded(rec, lambda: runner.labels(volume))
    seconds = time.perf_counter() - started
    if labels is FAILED:
        return FAILED
    peak = host.peak_mb()
    rec.peak_rss_mb = max(rec.peak_rss_mb or 0.0, peak or 0.0)
    if before is not None and peak is not None:
        rec.run_rss_mb = max(rec.run_rss_mb or 0.0, peak - before)
    if sampler:
        rec.extra["_gpu_peak_used_mb"] = max(rec.extra.get("_gpu_peak_used_mb", 0.0), sampler.peak_mb)
        rec.run_gpu_mb = max(rec.run_gpu_mb or 0.0, sampler.peak_mb - gpu_before)
    return labels, seconds


def _matmul_peaks(device: str, precisions: set[str], settings: BenchSettings) -> dict[str, float]:
    """Measured matmul peak FLOP/s per precision used on ``device`` (fp16 only on GPUs)."""
    from tpem_seg.runtime.flops import measure_matmul_peak, measure_onnxruntime_matmul_peak

    peaks = {}
    for precision in sorted(precisions):
        if precision == "fp16" and not device.startswith("cuda"):
            continue
        peaks[precision] = measure_matmul_peak(device, precision, settings.peak_size, settings.peak_repeats,
                                               settings.peak_min_seconds).flops_per_s
        if precision == "fp32" and device == "cpu":
            ort_peak = measure_onnxruntime_matmul_peak(settings.peak_size or 2048, settings.peak_repeats,
                                                       settings.peak_min_seconds)
            if ort_peak is not None:
                peaks[precision] = max(peaks[precision], ort_peak.flops_per_s)
    return peaks


def _derive(rec: BenchRecord, baseline: BenchRecord, n_tiles: int, n_voxels: int, flops_per_tile: int,
            peaks: dict[str, float], gpu_idle_mb: float | None) -> None:
    if rec.end_to_end is not None:
        rec.voxels_per_s = n_voxels / rec.end_to_end.median
        if baseline.end_to_end is not None:
            rec.speedup = baseline.end_to_end.median / rec.end_to_end.median
    if rec.network is not None:
        rec.network_tiles_per_s = n_tiles / rec.network.median
        rec.achieved_flops = flops_per_tile * n_tiles / rec.network.median
        if rec.end_to_end is not None:
            rec.pipeline_efficiency = rec.network.median / rec.end_to_end.median
        peak = peaks.get(rec.config.precision)
        if peak:
            rec.peak_flops = peak
            rec.fraction_of_peak = rec.achieved_flops / peak
    used = rec.extra.pop("_gpu_peak_used_mb", None)
    if used is not None and gpu_idle_mb is not None:
        rec.peak_gpu_mb = used - gpu_idle_mb


#: What :func:`_guarded` returns when the call raised.
FAILED = object()


def _guarded(rec: BenchRecord, call: Callable):
    """``call()``'s result; on an exception, mark ``rec`` failed with it (logged with its traceback)
    and return :data:`FAILED`."""
    try:
        return call()
    except Exception as err:  # one configuration's failure is recorded; the others go on
        log.exception("%s failed", rec.name)
        rec.status, rec.reason = "failed", f"{type(err).__name__}: {err}"
        return FAILED


def _package_info(package: ModelPackage) -> dict:
    m = package.manifest
    return {"name": m.name, "path": str(package.path), "config": m.config.to_dict(), "tile": list(m.tile),
            "channels": list(m.channels), "classes": list(m.classes),
            "normalization": m.normalization.to_dict(), "description": m.description}


# -- reports -----------------------------------------------------------------------------------------


def _fmt(value, spec: str = ".2f", scale: float = 1.0, suffix: str = "") -> str:
    return "–" if value is None else f"{value / scale:{spec}}{suffix}"


def markdown_table(report: BenchReport) -> str:
    """The records as one markdown table, the baseline first."""
    head = ("| configuration | end-to-end s (median, min–max) | Mvox/s | × baseline | network s | tiles/s "
            "| pipeline eff. | GFLOP/s (network) | % of matmul peak | peak RSS MB (run +MB) | GPU MB (run +MB) "
            "| mean Dice | voxels agree | max abs Δp | agrees |")
    columns = head.count("|") - 1
    lines = [head, "|" + "---|" * columns]
    for r in report.records:
        if r.status != "ok":
            lines.append(f"| {r.name} | {r.status}: {r.reason} |" + " |" * (columns - 2))
            continue
        e2e = r.end_to_end
        a = r.agreement
        lines.append(
            f"| {r.name} | {_fmt(e2e.median if e2e else None)} ({_fmt(min(e2e.samples) if e2e else None)}–"
            f"{_fmt(max(e2e.samples) if e2e else None)}) | {_fmt(r.voxels_per_s, '.3f', 1e6)} "
            f"| {_fmt(r.speedup, '.2f', suffix='×')} | {_fmt(r.network.median if r.network else None)} "
            f"| {_fmt(r.network_tiles_per_s, '.3f')} | {_fmt(r.pipeline_efficiency, '.0%')} "
            f"| {_fmt(r.achieved_flops, '.1f', 1e9)} | {_fmt(r.fraction_of_peak, '.0%')} "
            f"| {_fmt(r.peak_rss_mb, '.0f')} (+{_fmt(r.run_rss_mb, '.0f')}) "
            f"| {_fmt(r.peak_gpu_mb, '.0f')}{'' if r.run_gpu_mb is None else f' (+{r.run_gpu_mb:.0f})'} "
            f"| {'ref' if a is None else _fmt(a.mean_dice, '.4f')} "
            f"| {'ref' if a is None else _fmt(a.voxel_agreement, '.2%')} "
            f"| {'ref' if a is None else _fmt(a.max_abs_prob_diff, '.2e')} "
            f"| {'ref' if a is None else ('yes' if a.ok else 'NO')} |")
    return "\n".join(lines)


def markdown_report(report: BenchReport) -> str:
    """A self-contained markdown page: command, machine, input, package, settings, peaks, the table."""
    m = report.machine
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    gpu = m.get("gpu")
    peaks = ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in report.matmul_peaks.items())
    inp = report.input
    s = report.settings
    lines = [
        f"# tpem-seg benchmark: {report.package['name']} on {'x'.join(map(str, inp.get('shape_czyx', [])))}",
        "",
        f"Command: `{report.command}`",
        "",
        f"- started {report.started}, {report.seconds:.0f} s in all",
        f"- machine: {m['cpu']}, {m['cores']} cores (torch threads {m.get('torch_threads')}, "
        f"{', '.join(f'{k}={v}' for k, v in m.get('env', {}).items() if v) or 'no OMP_* set'}), "
        f"{m.get('memory_gb')} GB, native bf16 {m['native_bf16']}; load average at start "
        f"{_loads(m.get('load_average'))}, at end {_loads(m.get('load_average_end'))}",
        f"- GPU: {gpu['name']} ({gpu['memory_gb']} GB, CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']})" if gpu else
        "- GPU: none",
        f"- versions: {versions}",
        f"- input: {inp.get('source')} {inp.get('shape_czyx')} {inp.get('dtype')}"
        + (f", crop {inp['crop']}" if inp.get("crop") else ""),
        f"- package: {report.package['name']} ({report.package['description']}); tile "
        f"{'x'.join(map(str, report.package['tile']))}, {report.flops_per_tile / 1e9:.1f} GFLOP per tile "
        f"(FlopCounterMode: matmuls and convolutions)",
        f"- settings: overlap {s.overlap}, Gaussian sigma {s.sigma_scale} x tile, batch "
        f"{s.batch_size or 'default'} (baseline {s.baseline_batch('cuda' if gpu else 'cpu')}), {s.warmup} warm-up run(s), {s.repeats} timed end-to-end repeats and "
        f"{s.network_repeats or s.repeats} network-only repeats, interleaved",
        f"- measured dense matmul peak (best of {s.peak_repeats}, before and after the runs; torch, and for fp32 "
        f"on the CPU also ONNX Runtime's MatMul, the better counts): {peaks}",
        "",
        markdown_table(report),
        "",
        "Columns: end-to-end is `Segmenter.segment` on the in-memory volume (normalisation, tiling, network, "
        "blending, labels) and, for the baseline, normalisation + `sliding_window_inference` + argmax; network is "
        "the network alone on the same tiles, batches already in the backend's memory; pipeline efficiency = "
        "network / end-to-end; GFLOP/s = FLOPs of the network on all tiles / network time; peak RSS is the "
        "process's (all configurations stay loaded), `run +MB` what the run added; agreement is against the "
        "baseline on the whole volume (Dice over foreground classes, fraction of equal voxels, max abs difference "
        "of probabilities; limits per precision in `tpem_seg.runtime.bench.AGREEMENT_LIMITS`).",
    ]
    for r in report.records:
        if r.status == "ok" and r.description:
            lines.append(f"- {r.name}: {r.description}, batch {r.batch_size}, load {_fmt(r.load_seconds, '.1f')} s, "
                         f"first run {_fmt(r.first_run_seconds, '.1f')} s")
    return "\n".join(lines) + "\n"


def _loads(values) -> str:
    return "–" if not values else ", ".join(f"{v:.1f}" for v in values)


def write_report(report: BenchReport, json_path: str | os.PathLike | None = None,
                 markdown_path: str | os.PathLike | None = None) -> None:
    """Write the report as JSON and/or markdown (folders are made)."""
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n",
                                   encoding="utf-8")
    if markdown_path is not None:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(markdown_report(report), encoding="utf-8")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
