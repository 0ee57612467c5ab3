"""The TensorRT build and run code driven through stand-ins for ``tensorrt`` and ``cuda-python``.

This checks OUR orchestration (which calls, in which order, buffers, chunking, the cache, the
sidecar, parity) against stand-ins shaped like the TensorRT 10 and cuda-python APIs as we read
their documentation. It does not verify TensorRT itself: the stand-in "engine" runs the ONNX with
ONNX Runtime, and its "device memory" is host memory. Real TensorRT runs are in
test_tensorrt_engines.py (skipped without TensorRT and a GPU).
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import shutil
import sys
import types

import numpy as np
import pytest

from tpem_seg.models import open_package
from tpem_seg.runtime import engines as E

onnx = pytest.importorskip("onnx")


# -- a stand-in for tensorrt ------------------------------------------------------------------------


def fake_tensorrt(version: str = "10.3.0") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    DataType = enum.Enum("DataType", "FLOAT HALF INT32 INT64 BOOL")
    trt.DataType, trt.float32, trt.float16, trt.int64 = DataType, DataType.FLOAT, DataType.HALF, DataType.INT64
    trt.LayerType = enum.Enum("LayerType", sorted({k.split("/")[0] for k in E.ONNX_OP_LAYER_KINDS.values()}))
    trt.ElementWiseOperation = enum.Enum("ElementWiseOperation", "SUM SUB PROD DIV POW")
    trt.UnaryOperation = enum.Enum("UnaryOperation", "SQRT RECIP ERF EXP")
    trt.ReduceOperation = enum.Enum("ReduceOperation", "AVG SUM")
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32 OBEY_PRECISION_CONSTRAINTS")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")

    class ILogger:
        Severity = enum.Enum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE")

        def __init__(self):
            pass

    class Tensor:
        def __init__(self, name, shape=(), dtype=DataType.FLOAT):
            self.name, self.shape, self.dtype = name, shape, dtype

    class ILayer:
        def __init__(self, name, kind):
            base, _, op = kind.partition("/")
            self.name, self.type, self._op = name, trt.LayerType[base], op
            self.precision, self.output_types, self.num_outputs = None, {}, 1
            self._out = Tensor(name + "_out")

        def get_output(self, j):
            return self._out

        def set_output_type(self, j, dtype):
            self.output_types[j] = dtype

    class IElementWiseLayer(ILayer):
        op = property(lambda self: trt.ElementWiseOperation[self._op])

    class IUnaryLayer(ILayer):
        op = property(lambda self: trt.UnaryOperation[self._op])

    class IReduceLayer(ILayer):
        op = property(lambda self: trt.ReduceOperation[self._op])

    class INormalizationLayer(ILayer):
        compute_precision = None

    class Network:
        def __init__(self):
            self.layers, self.inputs, self.outputs, self.onnx = [], [], [], None

        num_layers = property(lambda self: len(self.layers))
        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            model = onnx.load(path)
            self.network.onnx = path
            for value, into in ((model.graph.input[0], self.network.inputs),
                                (model.graph.output[0], self.network.outputs)):
                dims = value.type.tensor_type.shape.dim
                into.append(Tensor(value.name, tuple(-1 if d.dim_param else d.dim_value for d in dims)))
            self.network.layers = [ILayer(n.name, E.ONNX_OP_LAYER_KINDS[n.op_type]) for n in model.graph.node]
            return True

    class Profile:
        def set_shape(self, name, min, opt, max):
            self.shapes = {"name": name, "min": min, "opt": opt, "max": max}

    class Cache:
        def __init__(self, blob):
            self.blob = bytes(blob) or b"timing"

        def serialize(self):
            return self.blob

    class BuilderConfig:
        def __init__(self):
            self.flags, self.profiles, self.pool, self.cache = set(), [], {}, None
            self.builder_optimization_level = 3

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, blob):
            return Cache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            trt.built = []

        def create_network(self, flags):
            assert flags == 0
            return Network()

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.built.append((network, config))
            held = [layer.name for layer in network.layers if layer.precision is trt.float32]
            return json.dumps({"onnx": network.onnx, "profile": config.profiles[0].shapes,
                               "flags": sorted(f.name for f in config.flags), "held": held}).encode()

    class Engine:
        def __init__(self, plan):
            self.plan = json.loads(plan)
            self.num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.float32

        def get_tensor_profile_shape(self, name, index):
            p = self.plan["profile"]
            return [p["min"], p["opt"], p["max"]]

        def create_execution_context(self):
            return Context(self)

    class Context:
        def __init__(self, engine):
            import onnxruntime as ort

            self.engine, self.addresses, self.shape = engine, {}, None
            self.session = ort.InferenceSession(engine.plan["onnx"], providers=["CPUExecutionProvider"])

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def set_input_shape(self, name, shape):
            p = self.engine.plan["profile"]
            self.shape = tuple(shape)
            return p["min"][0] <= shape[0] <= p["max"][0]

        def execute_async_v3(self, stream_handle):
            x = _view(self.addresses["input"], self.shape)
            (y,) = self.session.run(None, {"input": x.copy()})
            _view(self.addresses["logits"], y.shape)[...] = y
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return Engine(plan)

    for cls in (ILogger, ILayer, IElementWiseLayer, IUnaryLayer, IReduceLayer, INormalizationLayer, OnnxParser,
                Builder, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt


def _view(address: int, shape) -> np.ndarray:
    count = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address)).reshape(shape)


# -- a stand-in for cuda-python's runtime: "device" memory is host memory ------------------------------


def fake_cuda_runtime() -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings.runtime", None)
    rt.cudaError_t = enum.Enum("cudaError_t", "cudaSuccess cudaErrorInvalidValue")
    rt.cudaMemcpyKind = enum.Enum("cudaMemcpyKind", "cudaMemcpyHostToDevice cudaMemcpyDeviceToHost")
    ok = rt.cudaError_t.cudaSuccess
    rt.allocations, rt.copies = {}, []

    class Stream(int):
        pass

    def malloc(nbytes):
        buffer = np.zeros(nbytes, np.uint8)
        rt.allocations[buffer.ctypes.data] = buffer
        return ok, buffer.ctypes.data

    def free(ptr):
        rt.allocations.pop(ptr)
        return (ok,)

    def memcpy_async(dst, src, nbytes, kind, stream):
        assert dst in rt.allocations or src in rt.allocations
        rt.copies.append(kind.name)
        ctypes.memmove(dst, src, nbytes)
        return (ok,)

    rt.cudaMalloc = rt.cudaMallocHost = malloc
    rt.cudaFree = rt.cudaFreeHost = free
    rt.cudaMemcpyAsync = memcpy_async
    rt.cudaStreamCreate = lambda: (ok, Stream(7))
    rt.cudaStreamSynchronize = rt.cudaStreamDestroy = rt.cudaSetDevice = lambda *a: (ok,)
    return rt


@pytest.fixture
def stand_ins(monkeypatch):
    """Install the stand-ins as ``tensorrt`` and ``cuda.bindings.runtime``, with one "GPU"."""
    import tpem_seg.runtime.devices as devices

    trt, rt = fake_tensorrt(), fake_cuda_runtime()
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.__spec__ = importlib.machinery.ModuleSpec("cuda", None, is_package=True)
    bindings.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings", None, is_package=True)
    cuda.bindings, bindings.runtime = bindings, rt
    for name, module in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                         ("cuda.bindings.runtime", rt)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(E, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(E, "gpu_identity", lambda index=0: ("NVIDIA Stand-in GPU", "9.0"))
    return trt, rt


@pytest.fixture
def package(package_2ch, tmp_path):
    return open_package(shutil.copytree(package_2ch.path, tmp_path / "copy.tpem"))


def test_build_holds_norms_in_fp32_and_caches_engine_and_timing(stand_ins, package):
    from tpem_seg.export.engine_build import build_checked_engine

    trt, _ = stand_ins
    assert E.tensorrt_unavailable("cuda") is None
    record, report = build_checked_engine(package, E.EngineConfig("fp16", E.choose_profile(2, 3), workspace_gib=2),
                                          "cuda")
    network, config = trt.built[0]
    assert config.flags == {trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS}
    assert config.pool == {trt.MemoryPoolType.WORKSPACE: 2 << 30}
    assert config.profiles[0].shapes == {"name": "input", "min": (1, 2, 16, 32, 32), "opt": (2, 2, 16, 32, 32),
                                         "max": (3, 2, 16, 32, 32)}
    held = [layer for layer in network.layers if layer.precision is trt.float32]
    assert {layer.type.name for layer in held} == {"NORMALIZATION", "SOFTMAX", "REDUCE", "ELEMENTWISE", "UNARY"}
    assert all("norm" in layer.name for layer in held if layer.type.name in ("ELEMENTWISE", "UNARY"))
    assert all(layer.output_types == {0: trt.float32} for layer in held)
    assert all(layer.compute_precision is trt.float32 for layer in held if layer.type.name == "NORMALIZATION")
    meta = json.loads(record.sidecar.read_text())
    assert meta["key"]["tensorrt"] == "10.3.0" and meta["key"]["gpu"] == "NVIDIA Stand-in GPU"
    assert meta["builder"]["fp32_layers"] == [layer.name for layer in held]
    assert meta["parity"]["passed"] and report.max_abs_prob_diff < 1e-5
    assert (package.engines_dir / meta["builder"]["timing_cache"]).read_bytes() == b"timing"
    assert open_package(package.path).manifest.files == package.manifest.files


def test_backend_keeps_buffers_and_chunks_large_batches(stand_ins, package):
    from tpem_seg.runtime.backends import create_backend

    _, rt = stand_ins
    E.build_engine(package, E.EngineConfig("fp32", E.choose_profile(2, 3)), "cuda")
    batch = np.random.default_rng(0).random((5, 2, 16, 32, 32), dtype=np.float32)
    with create_backend("tensorrt", package, "cuda", "fp32") as trt, create_backend("onnxruntime", package,
                                                                                     "cpu") as ort:
        allocated = set(rt.allocations)
        assert len(allocated) == 4  # input/output on the "device" and pinned staging, allocated once
        np.testing.assert_allclose(trt.infer(batch), ort.infer(batch), atol=1e-6)
        np.testing.assert_allclose(trt.infer(batch[:1]), ort.infer(batch[:1]), atol=1e-6)
        assert set(rt.allocations) == allocated
        assert rt.copies.count("cudaMemcpyHostToDevice") == 3  # chunks of 3 + 2, then 1
    assert not rt.allocations  # all freed on close


def test_segmenter_on_the_tensorrt_backend(stand_ins, package):
    from tpem_seg import Segmenter

    E.build_engine(package, E.EngineConfig("fp16"), "cuda")
    volume = np.random.default_rng(1).random((2, 20, 40, 40), dtype=np.float32)
    with Segmenter(package, backend="tensorrt", device="cuda", precision="fp16", output="logits") as seg:
        assert seg.backend.name == "tensorrt"
        trt = seg.segment(volume, axes="CZYX")
    with Segmenter(package, backend="onnxruntime", device="cpu", output="logits") as seg:
        np.testing.assert_allclose(trt, seg.segment(volume, axes="CZYX"), atol=1e-5)


def test_engine_from_another_tensorrt_is_rebuilt_or_refused(stand_ins, package, monkeypatch):
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    trt, _ = stand_ins
    old = E.build_engine(package, E.EngineConfig("fp16"), "cuda")
    monkeypatch.setattr(trt, "__version__", "10.4.0")
    assert not TensorRTBackend.supports(package, "fp16")  # auto picks another backend
    with pytest.raises(E.EngineMissing, match="built with TensorRT 10.3.0, this machine has 10.4.0"):
        TensorRTBackend(package, "cuda", "fp16", build=False).load()
    with TensorRTBackend(package, "cuda", "fp16", build=True) as backend:
        assert backend.record.key.tensorrt == "10.4.0" and backend.record.plan != old.plan
    monkeypatch.setenv(E.BUILD_ENV, "1")
    assert TensorRTBackend.supports(package, "fp16")


def test_engine_failing_parity_is_deleted(stand_ins, package, monkeypatch):
    from tpem_seg.export.engine_build import EngineParityOptions, build_checked_engine
    from tpem_seg.export.errors import ParityError
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    original = TensorRTBackend._run

    def drifting(self, chunk):
        logits = original(self, chunk)
        logits[:, 0] += 1.0
        return logits

    monkeypatch.setattr(TensorRTBackend, "_run", drifting)
    with pytest.raises(ParityError, match="the engine was deleted"):
        build_checked_engine(package, E.EngineConfig("fp16"), "cuda", EngineParityOptions(1, 1))
    assert not list(package.engines_dir.glob("*.plan")) and not list(package.engines_dir.glob("*_b*.json"))


def test_engine_cli_with_stand_ins(stand_ins, package, capsys):
    from tpem_seg.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["engine", "build", str(package.path), "--precision", "fp16", "--batch-size", "2", "--parity-tiles",
              "1"])
    assert exit_.value.code == 0
    with pytest.raises(SystemExit):
        main(["engine", "list", str(package.path)])
    out = capsys.readouterr().out
    assert "_fp16_b1-2-4.plan" in out and "1 engine(s)" in out and "fits" in out


def test_tensorrt_11_is_refused_with_the_fix(stand_ins, monkeypatch):
    from tpem_seg.runtime.backends.tensorrt_backend import TensorRTBackend

    trt, _ = stand_ins
    monkeypatch.setattr(trt, "__version__", "11.4.0")
    assert "pip install 'tensorrt>=10,<11'" in TensorRTBackend.availability("cuda")
