"""TensorRT engines: built from a package's ONNX, cached per machine, found again when they fit.

The runtime owns engines (export only asks for one to be built). A package keeps them in::

    NAME.tpem/engines/
        <key>.plan                           the serialized engine
        <key>.json                           its sidecar: key, plan sha256, ONNX sha256, builder settings,
                                             build parity (TensorRT vs ONNX Runtime), when and how built
        timing_<gpu>_sm<cc>_trt<version>.cache   TensorRT timing cache shared by builds on that machine

``engines/`` is not covered by the manifest's checksums, so adding an engine never changes
the package; the sidecar carries the plan's own sha256 instead. The key is the GPU model,
its compute capability, the TensorRT version, the precision and the batch profile
(``min``/``opt``/``max`` tiles per call). An engine whose sidecar does not match this machine,
this TensorRT or this package's ONNX is never deserialised: it is rebuilt on request, or the
user is told the command that rebuilds it. A package folder that is not writable (e.g. bundled
in site-packages) gets its engines in a per-user cache instead (``$TPEM_SEG_CACHE`` or
``~/.cache/tpem-seg``).

Everything down to :func:`find_engine` is pure Python and runs without TensorRT; the
builder below it imports ``tensorrt`` inside its functions. Calls follow the TensorRT 10
Python API (``build_serialized_network``, ``set_memory_pool_limit``, named-tensor I/O,
``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``). This path has not been run on a GPU in this
repository's CI; see docs/export.md for what was verified where.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from tpem_seg.errors import BackendUnavailable, TpemSegError
from tpem_seg.models.package import ModelPackage, sha256_file
from tpem_seg.runtime.devices import cuda_device_count, device_index
from tpem_seg.util import atomic
from tpem_seg.util.cache import cache_root

log = logging.getLogger(__name__)

ENGINE_PRECISIONS = ("fp16", "fp32")
SIDECAR_FORMAT = "tpem-seg-engine"
SIDECAR_VERSION = 1
#: Set to 1 to let the TensorRT backend build a missing engine on first use.
BUILD_ENV = "TPEM_SEG_TENSORRT_BUILD"
INSTALL_HINT = "pip install 'tpem-seg[tensorrt]' (TensorRT 10 and cuda-python 12, with an NVIDIA driver)"


class EngineError(TpemSegError):
    """A TensorRT engine cannot be found, trusted or built."""


class EngineMissing(EngineError):
    """No cached engine fits this machine, TensorRT version, precision and package."""


class EngineBuildError(EngineError):
    """TensorRT refused to parse or build the network."""


# -- keys, profiles and configs (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile over the batch axis: tiles per call, ``min <= opt <= max``."""

    min: int = 1
    opt: int = 4
    max: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise EngineError(f"batch profile {self.min}/{self.opt}/{self.max} must satisfy 1 <= min <= opt <= max; "
                              f"e.g. --batch-size 4 --max-batch 8")

    @property
    def label(self) -> str:
        return f"b{self.min}-{self.opt}-{self.max}"

    def shapes(self, channels: int, tile: tuple[int, int, int]) -> tuple[tuple[int, ...], ...]:
        """(min, opt, max) input shapes ``(N, C, D, H, W)`` for ``IOptimizationProfile.set_shape``."""
        return tuple((n, channels, *tile) for n in (self.min, self.opt, self.max))

    def covers(self, batch: int) -> bool:
        return self.min <= batch <= self.max


def choose_profile(batch_size: int | None = None, max_batch: int | None = None) -> BatchProfile:
    """The profile for a runtime that sends ``batch_size`` tiles per call (default 4, the GPU default).

    TensorRT tunes kernels for ``opt``; ``max`` leaves room for larger calls (default ``2 * opt``);
    ``min`` is 1 so the last, partial batch of a volume always fits.
    """
    opt = batch_size or 4
    if opt < 1:
        raise EngineError(f"batch size {opt} must be at least 1")
    top = max_batch if max_batch is not None else 2 * opt
    if top < opt:
        raise EngineError(f"--max-batch {top} is smaller than the batch size {opt}; raise --max-batch")
    return BatchProfile(1, opt, top)


@dataclass(frozen=True)
class MachineInfo:
    """What an engine is specific to: GPU model, compute capability ("9.0") and TensorRT version."""

    gpu: str
    compute_capability: str
    tensorrt: str

    def describe(self) -> str:
        return f"{self.gpu} (sm{self.compute_capability.replace('.', '')}, TensorRT {self.tensorrt})"


@dataclass(frozen=True)
class EngineKey:
    """The cache key of one engine."""

    gpu: str
    compute_capability: str
    tensorrt: str
    precision: str
    profile: BatchProfile

    @property
    def stem(self) -> str:
        """File name stem, e.g. ``nvidia-h100-80gb-hbm3_sm90_trt10.3.0_fp16_b1-4-8``."""
        return (f"{slug(self.gpu)}_sm{self.compute_capability.replace('.', '')}_trt{self.tensorrt}_"
                f"{self.precision}_{self.profile.label}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profile"] = asdict(self.profile)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineKey":
        return cls(str(d["gpu"]), str(d["compute_capability"]), str(d["tensorrt"]), str(d["precision"]),
                   BatchProfile(**d["profile"]))


@dataclass(frozen=True)
class EngineConfig:
    """How to build an engine.

    precision: ``fp16`` (layers that drift held in FP32, see :func:`hold_in_fp32`) or ``fp32``
        (TF32 off, so FP32 means FP32).
    profile: batch sizes the engine accepts and is tuned for.
    workspace_gib: cap on TensorRT's scratch memory (GiB); None leaves TensorRT's default (the GPU's memory).
    keep_fp32: hold normalisation, softmax and the reductions feeding norms in FP32 (fp16 only).
    optimization_level: TensorRT builder optimisation level 0..5; None for TensorRT's default (3).
    timing_cache: reuse and update the timing cache in ``engines/`` (faster rebuilds).
    """

    precision: str = "fp16"
    profile: BatchProfile = field(default_factory=BatchProfile)
    workspace_gib: float | None = None
    keep_fp32: bool = True
    optimization_level: int | None = None
    timing_cache: bool = True

    def __post_init__(self) -> None:
        if self.precision not in ENGINE_PRECISIONS:
            raise EngineError(f"TensorRT engines are built at {' or '.join(ENGINE_PRECISIONS)}, not "
                              f"{self.precision!r}; use --precision fp16")
        if self.workspace_gib is not None and self.workspace_gib <= 0:
            raise EngineError(f"workspace {self.workspace_gib} GiB must be positive")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise EngineError(f"optimisation level {self.optimization_level} must be 0..5")


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"`` (safe in file names)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def engine_key(machine: MachineInfo, config: EngineConfig) -> EngineKey:
    return EngineKey(machine.gpu, machine.compute_capability, machine.tensorrt, config.precision, config.profile)


def engine_mismatch(meta: dict[str, Any], machine: MachineInfo, precision: str, onnx_sha256: str) -> str | None:
    """Why the engine described by sidecar ``meta`` must not run here, or None if it may.

    An engine is tied to the exact TensorRT version, the GPU's compute capability and model,
    the precision it was built at and the ONNX graph it was built from.
    """
    if meta.get("format") != SIDECAR_FORMAT or meta.get("version") != SIDECAR_VERSION:
        return "its sidecar is not a tpem-seg engine record this version reads"
    try:
        key = EngineKey.from_dict(meta["key"])
    except (KeyError, TypeError, ValueError, TpemSegError) as err:
        return f"its sidecar is malformed ({type(err).__name__})"
    if meta.get("onnx_sha256") != onnx_sha256:
        return "it was built from another model.onnx (the package was re-exported)"
    if key.tensorrt != machine.tensorrt:
        return f"it was built with TensorRT {key.tensorrt}, this machine has {machine.tensorrt}"
    if key.compute_capability != machine.compute_capability:
        return (f"it was built for compute capability {key.compute_capability} ({key.gpu}), this GPU is "
                f"{machine.compute_capability} ({machine.gpu})")
    if key.gpu != machine.gpu:
        return f"it was built on a {key.gpu}, this GPU is a {machine.gpu}"
    if key.precision != precision:
        return f"it is {key.precision}, {precision} was asked for"
    return None


# -- which layers stay in FP32 (pure) ----------------------------------------------------------------

#: Layer kinds computed in FP32 in an FP16 engine: normalisations (InstanceNorm, LayerNorm) and softmax
#: accumulate over many elements and lose accuracy or overflow in FP16; reductions feed norms' statistics.
FP32_KINDS = frozenset({"NORMALIZATION", "SOFTMAX", "RAGGED_SOFTMAX", "REDUCE"})
#: Element-wise/unary ops of a decomposed norm (variance and its square root) that drift in FP16.
FP32_OPS = frozenset({"ELEMENTWISE/POW", "UNARY/SQRT", "UNARY/RECIP"})
#: Cheap layer kinds that are also held when their name shows they belong to a norm or softmax.
NAME_HINT_KINDS = frozenset({"ELEMENTWISE", "UNARY", "SCALE"})
NAME_HINTS = ("norm", "softmax", "pow", "sqrt", "reducemean", "reduce_mean", "variance")

#: How TensorRT 10's ONNX parser imports the ops of an exported UNETR, as layer kind strings
#: (``LayerType`` name, ``/`` operation for element-wise, unary and reduce layers). Used to preview
#: the FP32 selection without TensorRT; the real build classifies the parsed network's own layers.
ONNX_OP_LAYER_KINDS = {
    "Conv": "CONVOLUTION", "ConvTranspose": "DECONVOLUTION", "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY",
    "Einsum": "EINSUM", "Add": "ELEMENTWISE/SUM", "Sub": "ELEMENTWISE/SUB", "Mul": "ELEMENTWISE/PROD",
    "Div": "ELEMENTWISE/DIV", "Pow": "ELEMENTWISE/POW", "Sqrt": "UNARY/SQRT", "Reciprocal": "UNARY/RECIP",
    "Erf": "UNARY/ERF", "Exp": "UNARY/EXP", "ReduceMean": "REDUCE/AVG", "ReduceSum": "REDUCE/SUM",
    "LayerNormalization": "NORMALIZATION", "InstanceNormalization": "NORMALIZATION",
    "GroupNormalization": "NORMALIZATION", "BatchNormalization": "SCALE", "Softmax": "SOFTMAX",
    "LeakyRelu": "ACTIVATION", "Relu": "ACTIVATION", "Gather": "GATHER", "Reshape": "SHUFFLE",
    "Transpose": "SHUFFLE", "Unsqueeze": "SHUFFLE", "Concat": "CONCATENATION", "Slice": "SLICE", "Cast": "CAST",
}


def hold_in_fp32(name: str, kind: str) -> bool:
    """Whether a layer named ``name`` of kind ``kind`` (e.g. ``"NORMALIZATION"``, ``"ELEMENTWISE/POW"``)
    is computed in FP32 in an FP16 engine. Convolutions and matrix products never are: they carry
    the speed-up and accumulate in FP32 inside TensorRT's kernels anyway."""
    kind = kind.upper()
    base = kind.split("/", 1)[0]
    if base in FP32_KINDS or kind in FP32_OPS:
        return True
    return base in NAME_HINT_KINDS and any(hint in name.lower() for hint in NAME_HINTS)


def fp32_layer_names(layers: Iterable[tuple[str, str]]) -> list[str]:
    """Names of the layers, from ``(name, kind)`` pairs in network order, to hold in FP32."""
    return [name for name, kind in layers if hold_in_fp32(name, kind)]


# -- the cache on disk (pure Python, no TensorRT) ----------------------------------------------------


@dataclass
class EngineRecord:
    """A cached engine: its plan file, its sidecar file and what the sidecar says."""

    plan: Path
    sidecar: Path
    meta: dict[str, Any]

    @property
    def key(self) -> EngineKey:
        return EngineKey.from_dict(self.meta["key"])

    def plan_problem(self) -> str | None:
        """Why the plan file cannot be trusted (missing, or not the bytes that were built), or None."""
        if not self.plan.is_file():
            return f"{self.plan.name} is missing"
        if sha256_file(self.plan) != self.meta.get("plan_sha256"):
            return f"{self.plan.name} fails its sha256 (changed or truncated)"
        return None


def onnx_sha256(package: ModelPackage) -> str:
    """The sha256 of the package's ONNX, as its verified manifest records it."""
    recorded = package.manifest.files.get(package.manifest.onnx_file)
    return recorded if recorded else sha256_file(package.onnx_path)


def user_engine_dir(package: ModelPackage) -> Path:
    """Per-user engine folder for a package whose own folder is read-only."""
    return cache_root() / "engines" / f"{slug(package.name)}-{onnx_sha256(package)[:12]}"


def engine_dirs(package: ModelPackage) -> list[Path]:
    """Where engines for ``package`` are looked for: its own ``engines/``, then the per-user cache."""
    return [package.engines_dir, user_engine_dir(package)]


def writable_engine_dir(package: ModelPackage) -> Path:
    """The package's ``engines/`` if it can be written, else the per-user cache folder."""
    own = package.engines_dir
    probe = own if own.exists() else own.parent
    if os.access(probe, os.W_OK):
        return own
    fallback = user_engine_dir(package)
    log.info("%s is not writable; engines go to %s", probe, fallback)
    return fallback


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """A sidecar's JSON object, or None (with a warning) if it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable engine sidecar %s (%s)", path, err)
        return None
    return data if isinstance(data, dict) else None


def list_engines(package: ModelPackage) -> list[EngineRecord]:
    """Every engine with a readable sidecar, in the package's ``engines/`` and the user cache."""
    records = []
    for folder in engine_dirs(package):
        for sidecar in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            meta = read_sidecar(sidecar)
            if meta is not None and meta.get("format") == SIDECAR_FORMAT:
                plan_name = Path(str(meta.get("plan", sidecar.stem + ".plan"))).name  # never outside the folder
                records.append(EngineRecord(sidecar.with_name(plan_name), sidecar, meta))
    return records


def engine_status(record: EngineRecord, machine: MachineInfo, precision: str, onnx_sha: str) -> str | None:
    """Why ``record`` cannot run here (sidecar mismatch or a bad plan file), or None if it can."""
    return engine_mismatch(record.meta, machine, precision, onnx_sha) or record.plan_problem()


def build_command(package: ModelPackage, precision: str) -> str:
    return f"tpem-seg engine build {package.path} --precision {precision}"


def find_engine(package: ModelPackage, machine: MachineInfo, precision: str) -> EngineRecord:
    """The cached engine that can run here, preferring the largest batch profile.

    Raises EngineMissing naming why cached engines do not fit and the command that builds one.
    """
    onnx_sha = onnx_sha256(package)
    usable, rejected = [], []
    for record in list_engines(package):
        problem = engine_status(record, machine, precision, onnx_sha)
        if problem is None:
            usable.append(record)
        elif isinstance(record.meta.get("key"), dict) and record.meta["key"].get("precision") == precision:
            rejected.append(f"{record.plan.name}: {problem}")
    if usable:
        return max(usable, key=lambda r: (r.key.profile.max, r.key.profile.opt))
    why = f" ({len(rejected)} cached engine(s) do not fit: {rejected[0]})" if rejected else ""
    raise EngineMissing(f"no TensorRT {precision} engine for {machine.describe()} in {package.path}{why}; "
                        f"build it with `{build_command(package, precision)}` (or set {BUILD_ENV}=1 to build "
                        f"it on first use)")


def timing_cache_path(folder: Path, machine: MachineInfo) -> Path:
    return folder / (f"timing_{slug(machine.gpu)}_sm{machine.compute_capability.replace('.', '')}_"
                     f"trt{machine.tensorrt}.cache")


def write_engine(folder: Path, key: EngineKey, plan: bytes, meta: dict[str, Any]) -> EngineRecord:
    """Store ``plan`` and its sidecar (``meta`` plus key, plan name and sha256) under ``folder``.

    The plan is written first and the sidecar last, each atomically: a sidecar never names a
    plan that is not complete.
    """
    import hashlib

    plan_path = folder / f"{key.stem}.plan"
    sidecar_path = folder / f"{key.stem}.json"
    atomic.write_bytes(plan_path, plan)
    full = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "key": key.to_dict(), "plan": plan_path.name,
            "plan_sha256": hashlib.sha256(plan).hexdigest(), **meta}
    atomic.write_bytes(sidecar_path, (json.dumps(full, indent=2) + "\n").encode("utf-8"))
    log.info("wrote engine %s (%.1f MB)", plan_path, len(plan) / 1e6)
    return EngineRecord(plan_path, sidecar_path, full)


def record_parity(record: EngineRecord, parity: dict[str, Any]) -> EngineRecord:
    """Store the build parity (TensorRT vs ONNX Runtime) in the engine's sidecar."""
    record.meta["parity"] = parity
    atomic.write_bytes(record.sidecar, (json.dumps(record.meta, indent=2) + "\n").encode("utf-8"))
    return record


# -- this machine ------------------------------------------------------------------------------------


def tensorrt_unavailable(device: str) -> str | None:
    """None if TensorRT can run on ``device`` here, else a one-line reason naming the fix."""
    import importlib.util

    if not device.startswith("cuda"):
        return ("TensorRT needs a CUDA GPU (and TensorRT installed there); use --backend onnxruntime "
                "(or --backend torch) on the CPU")
    if importlib.util.find_spec("tensorrt") is None:
        return f"the tensorrt backend needs TensorRT: {INSTALL_HINT}, or use --backend onnxruntime"
    if not _cuda_python_installed():
        return f"the tensorrt backend needs cuda-python for its GPU buffers: {INSTALL_HINT}"
    if cuda_device_count() == 0:
        return "TensorRT needs a CUDA GPU and none is visible (no NVIDIA driver?); use --backend onnxruntime"
    return tensorrt_version_problem(tensorrt_version())


def tensorrt_version_problem(version: str) -> str | None:
    """None for TensorRT 10; else why not. Engines here are built with TensorRT 10's per-layer precisions
    (weak typing), which TensorRT 11 removed in favour of strongly typed networks."""
    if version.split(".")[0] != "10":
        return (f"tpem-seg builds and runs TensorRT 10 engines, this is TensorRT {version}: "
                f"pip install 'tensorrt>=10,<11', or use --backend onnxruntime")
    return None


def _cuda_python_installed() -> bool:
    import importlib.util

    try:
        return any(importlib.util.find_spec(name) is not None for name in ("cuda.bindings", "cuda.cudart"))
    except ModuleNotFoundError:  # no top-level ``cuda`` package at all
        return False


def require_tensorrt(device: str) -> None:
    reason = tensorrt_unavailable(device)
    if reason is not None:
        raise BackendUnavailable(reason)


def gpu_identity(index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device ``index``, from the driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as err:
        raise BackendUnavailable("no NVIDIA driver (libcuda.so.1) here; TensorRT needs a CUDA GPU") from err
    device = ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (cuda.h)
    calls = (lib.cuInit(0), lib.cuDeviceGet(ctypes.byref(device), index),
             lib.cuDeviceGetName(name, len(name), device),
             lib.cuDeviceGetAttribute(ctypes.byref(major), 75, device),
             lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, device))
    if any(calls):
        raise BackendUnavailable(f"the CUDA driver could not describe GPU {index} (error codes {calls}); "
                                 f"check the device index and nvidia-smi")
    return name.value.decode("utf-8", "replace").strip(), f"{major.value}.{minor.value}"


def tensorrt_version() -> str:
    import tensorrt as trt

    return str(trt.__version__)


def machine_info(device: str = "cuda") -> MachineInfo:
    """This machine's engine identity for ``device`` (needs the driver and TensorRT)."""
    require_tensorrt(device)
    gpu, cc = gpu_identity(device_index(device))
    return MachineInfo(gpu, cc, tensorrt_version())


def build_on_first_use() -> bool:
    return os.environ.get(BUILD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# -- building (TensorRT 10 Python API; imports tensorrt inside) --------------------------------------


def trt_logger():
    """A ``tensorrt.ILogger`` that forwards TensorRT's messages to Python logging."""
    import tensorrt as trt

    levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR, trt.ILogger.Severity.ERROR: logging.ERROR,
              trt.ILogger.Severity.WARNING: logging.WARNING, trt.ILogger.Severity.INFO: logging.DEBUG,
              trt.ILogger.Severity.VERBOSE: logging.DEBUG}

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg) -> None:  # noqa: A003 (TensorRT's name)
            logging.getLogger("tpem_seg.tensorrt").log(levels.get(severity, logging.INFO), "%s", msg)

    return _Logger()


def network_from_onnx(builder, onnx_path: Path, logger):
    """Parse ``onnx_path`` into a new network of ``builder``; returns (network, parser).

    TensorRT 10 networks are always explicit-batch (``EXPLICIT_BATCH`` is deprecated and ignored),
    so the creation flags are 0: weakly typed, so per-layer precisions apply.
    """
    import tensorrt as trt

    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no detail"
        raise EngineBuildError(f"TensorRT could not parse {onnx_path} ({errors}); re-export with `tpem-seg export` "
                               f"or report the failing op")
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise EngineBuildError(f"{onnx_path} has {network.num_inputs} inputs and {network.num_outputs} outputs; "
                               f"a tpem-seg model has one of each; re-export it")
    if network.get_input(0).shape[0] != -1:
        raise EngineBuildError(f"{onnx_path} has a fixed batch size; re-export it with `tpem-seg export` "
                               f"(dynamic batch)")
    return network, parser


def _enum_name(value) -> str:
    return getattr(value, "name", None) or str(value).rsplit(".", 1)[-1]


def layer_kind(layer) -> str:
    """``"ELEMENTWISE/POW"``-style kind string of a TensorRT layer (type, and op where it has one)."""
    import tensorrt as trt

    kind = _enum_name(layer.type)
    with_op = {trt.LayerType.ELEMENTWISE: trt.IElementWiseLayer, trt.LayerType.UNARY: trt.IUnaryLayer,
               trt.LayerType.REDUCE: trt.IReduceLayer}.get(layer.type)
    if with_op is not None:
        layer.__class__ = with_op  # TensorRT's Python API hands back ILayer; this is its documented downcast
        kind += "/" + _enum_name(layer.op)
    return kind


def hold_layers_in_fp32(network) -> list[str]:
    """Set FP32 precision and output types on the layers :func:`hold_in_fp32` selects; their names.

    Only layers whose outputs are floating point are touched (shape arithmetic stays integer).
    Takes effect with ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``.
    """
    import tensorrt as trt

    layers = [network.get_layer(i) for i in range(network.num_layers)]
    floating = (trt.float32, trt.float16)
    held = set(fp32_layer_names((layer.name, layer_kind(layer)) for layer in layers))
    names = []
    for layer in layers:
        if layer.name not in held:
            continue
        if not all(layer.get_output(j).dtype in floating for j in range(layer.num_outputs)):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.__class__ = trt.INormalizationLayer
            if hasattr(layer, "compute_precision"):  # TRT 10; removed in 11
                layer.compute_precision = trt.float32
        names.append(layer.name)
    log.info("holding %d of %d layers in FP32", len(names), len(layers))
    return names


def builder_config_from(builder, network, config: EngineConfig, channels: int, tile: tuple[int, int, int],
                        timing_cache: bytes | None, hold_fp32: bool):
    """An ``IBuilderConfig`` for ``config``: precision flags, the batch profile, memory cap, timing cache."""
    import tensorrt as trt

    bconfig = builder.create_builder_config()
    if config.workspace_gib is not None:
        bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_gib * (1 << 30)))
    if config.precision == "fp16":
        if getattr(builder, "platform_has_fast_fp16", True) is False:  # deprecated in later TensorRT 10 releases
            log.warning("this GPU has no fast FP16; the FP16 engine may be slow")
        bconfig.set_flag(trt.BuilderFlag.FP16)
        if hold_fp32:
            bconfig.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    else:
        bconfig.clear_flag(trt.BuilderFlag.TF32)  # fp32 engines compute in true FP32
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, *config.profile.shapes(channels, tile))
    bconfig.add_optimization_profile(profile)
    if config.optimization_level is not None:
        bconfig.builder_optimization_level = config.optimization_level
    if timing_cache is not None:
        cache = bconfig.create_timing_cache(timing_cache)
        if not bconfig.set_timing_cache(cache, False):
            log.warning("TensorRT rejected the timing cache; building without it")
    return bconfig


def engine_from_network(builder, network, bconfig) -> bytes:
    """Build and serialise the engine (minutes for a ViT-B UNETR)."""
    serialized = builder.build_serialized_network(network, bconfig)
    if serialized is None:
        raise EngineBuildError("TensorRT could not build the engine (see the TensorRT messages above, -v for more); "
                               "try --workspace-gib larger or --precision fp32")
    return bytes(memoryview(serialized))


def build_engine(package: ModelPackage, config: EngineConfig = EngineConfig(), device: str = "cuda") -> EngineRecord:
    """Build an engine for ``package`` on ``device`` and cache it with its sidecar; the new record.

    The sidecar's ``parity`` is None until :func:`record_parity` stores a measurement.
    """
    import tensorrt as trt

    from tpem_seg.runtime.gpu_buffers import set_device

    machine = machine_info(device)
    set_device(device_index(device))
    key = engine_key(machine, config)
    folder = writable_engine_dir(package)
    cache_path = timing_cache_path(folder, machine)
    manifest = package.manifest
    logger = trt_logger()
    started = time.perf_counter()
    builder = trt.Builder(logger)
    network, _parser = network_from_onnx(builder, package.onnx_path, logger)
    hold = config.precision == "fp16" and config.keep_fp32
    held = hold_layers_in_fp32(network) if hold else []
    timing = (cache_path.read_bytes() if cache_path.is_file() else b"") if config.timing_cache else None
    bconfig = builder_config_from(builder, network, config, manifest.config.in_channels, manifest.tile, timing,
                                  hold_fp32=bool(held))
    log.info("building TensorRT %s engine for %s on %s (minutes)", config.precision, package.name, machine.describe())
    plan = engine_from_network(builder, network, bconfig)
    if config.timing_cache:
        atomic.write_bytes(cache_path, bytes(memoryview(bconfig.get_timing_cache().serialize())))
    meta = {
        "onnx_sha256": onnx_sha256(package), "package": manifest.name, "package_version": manifest.version,
        "input": {"name": network.get_input(0).name, "channels": manifest.config.in_channels,
                  "tile": list(manifest.tile)},
        "output": {"name": network.get_output(0).name, "classes": manifest.config.out_channels},
        "builder": {"workspace_gib": config.workspace_gib, "keep_fp32": hold, "fp32_layers": held,
                    "optimization_level": config.optimization_level, "tf32": config.precision != "fp32",
                    "timing_cache": cache_path.name if config.timing_cache else None},
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 1), "parity": None,
    }
    return write_engine(folder, key, plan, meta)


def load_or_build(package: ModelPackage, precision: str, device: str, build: bool,
                  config: EngineConfig | None = None) -> EngineRecord:
    """The engine that fits this machine; with ``build``, build one when none does (else EngineMissing)."""
    machine = machine_info(device)
    try:
        return find_engine(package, machine, precision)
    except EngineMissing as missing:
        if not build:
            raise
        log.warning("%s; building one now", str(missing).split(";")[0])
    return build_engine(package, config or EngineConfig(precision=precision), device)
