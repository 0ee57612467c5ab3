"""Runners: thin adapters that let the harness drive the baseline and every configuration alike.

The baseline is the torch backend (eager fp32) under MONAI's ``sliding_window_inference``: what a
lab runs today. A configuration is a backend (built through
:func:`~tpem_seg.runtime.backends.create_backend`) inside a
:class:`~tpem_seg.runtime.segmenter.Segmenter`, the path users run, or the native runtime
(libtpem through ``tpem_seg_cpp``, when installed), the path workstation software runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from tpem_seg.io import Volume
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.backends import BACKENDS, Backend, BackendSpec, backend_class, create_backend, unavailable
from tpem_seg.runtime.bench.config import BASELINE, NATIVE, BenchConfig, BenchSettings
from tpem_seg.runtime.bench.memory import synchronize
from tpem_seg.runtime.devices import cpu_count
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.runtime.outputs import to_probabilities


class Runner(Protocol):
    """What the bench drives for one configuration: labels ``(Z, Y, X)`` uint8, probabilities
    ``(K, Z, Y, X)`` float32, and (when ``times_network``) the network alone on prepared tiles."""

    config: BenchConfig
    times_network: bool

    def unavailable(self) -> str | None: ...
    def load(self) -> None: ...
    def describe(self) -> str: ...
    def labels(self, volume: Volume) -> np.ndarray: ...
    def probabilities(self, volume: Volume) -> np.ndarray: ...
    def batch_size(self) -> int: ...
    def prepare_network(self, tiles: np.ndarray) -> None: ...
    def network_pass(self) -> None: ...
    def close(self) -> None: ...


class _NetworkOnly:
    """The network alone on tiles already in the backend's memory (device tensors where it takes them),
    in batches of the runner's ``batch_size()``."""

    backend: Backend
    _batches: list
    times_network = True

    def takes_tensors(self) -> bool:
        """Whether the network runs on torch tensors (as in the run) rather than numpy batches."""
        return self.backend.supports_device_tensors

    def prepare_network(self, tiles: np.ndarray) -> None:
        b = self.batch_size()
        batches = [np.ascontiguousarray(tiles[i:i + b]) for i in range(0, len(tiles), b)]
        if self.takes_tensors():
            import torch

            batches = [torch.from_numpy(t).to(self.backend.device) for t in batches]
        self._batches = batches

    def network_pass(self) -> None:
        run = self.backend.infer_tensor if self.takes_tensors() else self.backend.infer
        for batch in self._batches:
            run(batch)
        synchronize(self.backend.device)


class BaselineRunner(_NetworkOnly):
    """MONAI ``sliding_window_inference`` over the torch backend (the package's weights, eager fp32).

    Normalise the volume (the package's normalisation, whole volume), one tensor on the device,
    sliding window with Gaussian blending, argmax, labels to the host.
    """

    def __init__(self, package: ModelPackage, settings: BenchSettings, device: str = "cpu"):
        self.package = package
        self.settings = settings
        self.config = BenchConfig(BASELINE, "fp32", device)
        self.spec = BackendSpec("torch", device, "fp32")
        self._batches: list = []

    def unavailable(self) -> str | None:
        reason = unavailable("torch", self.config.device, "fp32", self.package)
        return None if reason is None else f"no baseline: {reason}"

    def load(self) -> None:
        import torch

        self._torch = torch
        self.backend = create_backend(self.spec, self.package).load()

    def describe(self) -> str:
        return f"MONAI sliding_window_inference over {self.backend.describe()}"

    def batch_size(self) -> int:
        return self.settings.baseline_batch(self.config.device)

    def takes_tensors(self) -> bool:
        return True  # MONAI hands the predictor torch tensors, on the CPU too

    def _logits(self, volume: Volume):
        from monai.inferers import sliding_window_inference

        torch = self._torch
        manifest = self.package.manifest
        normalizer = fit_normalizer(volume, manifest.normalization)
        x = torch.from_numpy(normalizer(volume.read_czyx()))[None].to(self.backend.device)
        with torch.inference_mode():
            logits = sliding_window_inference(
                x, roi_size=manifest.tile, sw_batch_size=self.batch_size(), predictor=self.backend.infer_tensor,
                overlap=self.settings.overlap, mode="gaussian", sigma_scale=self.settings.sigma_scale,
                padding_mode="constant", cval=0.0)
        return logits[0]

    def probabilities(self, volume: Volume) -> np.ndarray:
        return to_probabilities(self._logits(volume).float().cpu().numpy(), self.package.manifest.activation)

    def labels(self, volume: Volume) -> np.ndarray:
        from tpem_seg.runtime.arrays_torch import TorchOps
        from tpem_seg.runtime.outputs import OutputHead

        logits = self._logits(volume)
        head = OutputHead(self.package.manifest.activation, "labels")
        with self._torch.inference_mode():
            return head.from_sums(logits, None, TorchOps(logits.device)).cpu().numpy()

    def close(self) -> None:
        self._batches = []
        self.backend.close()


class SegmenterRunner(_NetworkOnly):
    """A tpem-seg configuration: its backend in a :class:`Segmenter` (labels, and logits for agreement).

    ``backend``: use this backend instance instead of building one from the config (tests inject
    faulty ones); ``workdir`` and ``calibration``: where an int8 copy of the model is written, and
    the tiles it is calibrated on.
    """

    def __init__(self, package: ModelPackage, config: BenchConfig, settings: BenchSettings,
                 backend: Backend | None = None, workdir: Path | None = None, calibration: np.ndarray | None = None):
        self.package = package
        self.config = config
        self.settings = settings
        self.backend = backend
        self.workdir = workdir
        self.calibration = calibration
        self._batches: list = []
        self._batch_size: int | None = None

    def _int8_path(self) -> Path | None:
        return None if self.workdir is None else self.workdir / f"{self.package.name}.int8.onnx"

    def _spec(self) -> BackendSpec:
        spec = self.config.spec()
        if spec.precision == "int8":
            spec = spec.replace(options={"model_path": self._int8_path(), "variant": "int8 static QDQ"})
        return spec

    def unavailable(self) -> str | None:
        if self.backend is not None:
            return None
        spec = self._spec()
        if spec.name == "torch" and "threads" in spec.options:
            return "torch threads are process-wide: here they would change every configuration's; set OMP_NUM_THREADS"
        if spec.precision == "int8" and self.calibration is None:
            return "int8 needs calibration tiles (the bench takes them from the volume when int8 is asked)"
        return unavailable(spec.name, spec.device, spec.precision, self.package, **spec.options)

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

    def _make_backend(self) -> Backend:
        spec = self._spec()
        if spec.precision == "int8":
            from tpem_seg.runtime.quantize import quantize_static_int8

            quantize_static_int8(self.package.onnx_path, spec.options["model_path"], self.calibration)
        if spec.options.get("compile") or spec.options.get("cuda_graphs"):
            # Fixed shapes for compiled graphs: pad the last, smaller batch of a row to the full batch.
            batch = self.settings.batch_size or create_backend(spec, self.package).default_batch_size()
            spec = spec.replace(options={"static_batch": batch})
        return create_backend(spec, self.package)

    def describe(self) -> str:
        return self.backend.describe() if self.backend is not None else self.config.name

    def labels(self, volume: Volume) -> np.ndarray:
        out = self._labels.segment(volume)
        self._batch_size = self._labels.last_summary.extra.get("batch_size", self._batch_size)
        return out

    def probabilities(self, volume: Volume) -> np.ndarray:
        out = self._logits.segment(volume)
        self._batch_size = self._logits.last_summary.extra.get("batch_size", self._batch_size)
        return to_probabilities(out, self.package.manifest.activation)

    def batch_size(self) -> int:
        return self._batch_size or self.settings.baseline_batch(self.config.device)

    def close(self) -> None:
        self._batches = []
        if self.backend is not None:
            self.backend.close()


class NativeRunner:
    """The native runtime: libtpem through ``tpem_seg_cpp`` (ONNX Runtime's C API on the CPU), with the
    ONNX Runtime runner's threads (``config.threads``, else the cores this process may use) and the
    bench's tile settings, on the voxels as they are (no resampling, as the baseline).

    Its network runs inside one C call per volume, so it has end-to-end figures only.
    """

    times_network = False

    def __init__(self, package: ModelPackage, config: BenchConfig, settings: BenchSettings):
        self.package = package
        self.config = config
        self.settings = settings
        self.threads = config.threads or cpu_count()
        self._model = None

    def unavailable(self) -> str | None:
        if self.config.device != "cpu":
            return "the bench runs the native runtime on the CPU only"
        if self.config.precision != "fp32":
            return f"the native runtime runs fp32 on the CPU, not {self.config.precision}"
        try:
            importlib.import_module("tpem_seg_cpp")
        except ImportError as err:
            return f"tpem_seg_cpp is not installed ({err}): bash cpp_bindings/install.sh PYTHON builds it"
        return None

    def load(self) -> None:
        import tpem_seg_cpp

        options = {"threads": self.threads, "overlap": self.settings.overlap,
                   "sigma_scale": self.settings.sigma_scale, "resample": False}
        if self.settings.batch_size:
            options["batch_size"] = self.settings.batch_size
        self._model = tpem_seg_cpp.Model(self.package.path, **options)
        self._version = tpem_seg_cpp.__version__

    def describe(self) -> str:
        if self._model is None:
            return self.config.name
        info = self._model.info
        return (f"libtpem {self._version} (tpem_seg_cpp), ONNX Runtime {info['onnxruntime']['version']} "
                f"C API, {'/'.join(info['providers'])}, {info['options']['threads']} threads")

    def _array(self, volume: Volume) -> np.ndarray:
        data = np.ascontiguousarray(volume.read_czyx())
        return data if data.dtype in (np.uint8, np.uint16, np.float32) else data.astype(np.float32)

    def labels(self, volume: Volume) -> np.ndarray:
        return self._model.segment(self._array(volume))

    def probabilities(self, volume: Volume) -> np.ndarray:
        return self._model.segment(self._array(volume), output="probabilities")

    def batch_size(self) -> int:
        return int(self._model.info["options"]["batch_size"])

    def prepare_network(self, tiles: np.ndarray) -> None:
        """Nothing to prepare: :attr:`times_network` is False."""

    def close(self) -> None:
        self._model = None


def default_configs(device: str, backends: Sequence[str], precisions: Sequence[str], compile: bool | None = None,
                    cuda_graphs: bool | None = None, channels_last: bool = False) -> list[BenchConfig]:
    """The cross product of ``backends`` and ``precisions`` on ``device``, less the precisions a backend
    does not have there (:meth:`Backend.precisions`; TensorRT on a CPU stays, to be reported as
    unavailable); ``native`` (the native runtime) at fp32.

    On a GPU, torch at fp16/bf16 runs with ``torch.compile`` and CUDA graphs unless switched off
    (``compile``/``cuda_graphs`` None means: on for a GPU, off for a CPU, where compiling takes
    minutes); fp32 torch stays eager, the configuration closest to the baseline.
    """
    gpu = device.startswith("cuda")
    compile = gpu if compile is None else compile
    cuda_graphs = gpu if cuda_graphs is None else cuda_graphs
    configs = []
    for backend in backends:
        if backend == NATIVE:
            configs += [BenchConfig(NATIVE, "fp32", device)] if "fp32" in precisions else []
            continue
        offered = backend_class(backend).precisions(device) if backend in BACKENDS else ()
        for precision in precisions:
            if precision not in offered:
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
        NativeRunner(package, c, settings) if c.backend == NATIVE else
        SegmenterRunner(package, c, settings, workdir=workdir, calibration=calibration) for c in configs]
