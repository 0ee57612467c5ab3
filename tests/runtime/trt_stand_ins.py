"""Stand-ins for ``tensorrt`` and ``cuda-python``, shaped like the TensorRT 10 and cuda-python APIs as we
read their documentation: the stand-in "engine" runs the ONNX with ONNX Runtime, and its "device
memory" is host memory. Used by test_tensorrt_stub.py and the backend conformance test.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types

import numpy as np
import pytest

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
