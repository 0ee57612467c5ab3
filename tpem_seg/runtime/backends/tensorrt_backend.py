"""TensorRT backend: the package's cached engine for this GPU, run with ``execute_async_v3``.

Buffers: cuda-python (see :mod:`tpem_seg.runtime.gpu_buffers`), not torch, so engines run
without a training stack. Input and output device buffers are allocated once for the engine's
largest batch and stay on the GPU between tiles; their addresses are bound to the execution
context once (``set_tensor_address``). Each call copies the batch into a page-locked staging
buffer, then host-to-device, ``set_input_shape``, ``execute_async_v3`` and device-to-host run
on one CUDA stream, with one synchronisation per call.

Engines are found with :func:`tpem_seg.runtime.engines.find_engine`; a missing one is built
on first use only when asked (``TensorRTBackend(..., build=True)`` or ``TPEM_SEG_TENSORRT_BUILD=1``),
otherwise the error names ``tpem-seg engine build``. Written against the TensorRT 10 Python
API; not yet run on a GPU in this repository (docs/export.md).
"""

from __future__ import annotations

import numpy as np

from tpem_seg.errors import BackendUnavailable, PackageError, TpemSegError
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime import engines
from tpem_seg.runtime.backends.base import Backend
from tpem_seg.runtime.devices import device_index

class TensorRTBackend(Backend):
    """A TensorRT engine (fp16 with FP32-held norms, or fp32) for the package, on one CUDA GPU."""

    name = "tensorrt"
    OPTIONS = (*Backend.OPTIONS, "build", "engine_config", "record")

    def __init__(self, package: ModelPackage, device: str = "cuda", precision: str = "fp16", *,
                 build: bool | None = None, engine_config: engines.EngineConfig | None = None,
                 record: engines.EngineRecord | None = None, batch_size: int | None = None):
        """``build``: build a missing engine on first use (default: ``TPEM_SEG_TENSORRT_BUILD``);
        ``engine_config``: how to build it (default: the precision, batch profile 1/4/8);
        ``record``: run this cached engine (checked against this machine) instead of looking one up."""
        super().__init__(package, device=device, precision=precision, batch_size=batch_size)
        if precision not in engines.ENGINE_PRECISIONS:
            raise BackendUnavailable(f"the tensorrt backend runs fp16 or fp32 engines, not {precision}; "
                                     f"use --precision fp16")
        self.build = engines.build_on_first_use() if build is None else build
        self.engine_config = engine_config
        self.record = record

    @classmethod
    def precisions(cls, device: str) -> tuple[str, ...]:
        return engines.ENGINE_PRECISIONS

    @classmethod
    def unavailable(cls, device: str = "cuda", precision: str = "fp16", package: ModelPackage | None = None,
                    **options) -> str | None:
        """Beyond TensorRT, cuda-python and a GPU: unless it may build on first use (``build``, or
        ``TPEM_SEG_TENSORRT_BUILD``) or is handed an engine (``record``), a cached engine for
        ``package`` that fits GPU 0 here, so ``--backend auto`` falls through to ONNX Runtime
        instead of failing on a missing engine."""
        reason = super().unavailable(device, precision, package, **options) or engines.tensorrt_unavailable(device)
        if reason is not None or package is None or options.get("record") is not None:
            return reason
        build = options.get("build")
        if build or (build is None and engines.build_on_first_use()):
            return None
        try:
            engines.find_engine(package, engines.machine_info(device), precision)
        except TpemSegError as missing:  # no fitting engine: the reason names `tpem-seg engine build`
            return str(missing)
        return None

    def _load(self) -> None:
        import tensorrt as trt

        from tpem_seg.runtime import gpu_buffers as gb

        reason = engines.tensorrt_unavailable(self.device)
        if reason is not None:
            raise BackendUnavailable(reason)
        self.record = self._engine_record()
        gb.set_device(device_index(self.device))
        self._open_engine(trt)
        self._allocate_buffers()

    def _open_engine(self, trt) -> None:
        """Deserialise the plan, make an execution context, find the I/O names and the largest batch."""
        self._logger = engines.trt_logger()
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.record.plan.read_bytes())
        if self._engine is None:
            raise PackageError(f"TensorRT could not load {self.record.plan}; delete it and run "
                               f"`{engines.build_command(self.package, self.precision)}`")
        self._context = self._engine.create_execution_context()
        self._input_name, self._output_name = self._io_names(trt)
        self._max_batch = int(self._engine.get_tensor_profile_shape(self._input_name, 0)[2][0])

    def _allocate_buffers(self) -> None:
        """Device and page-locked host buffers for the largest batch, bound to the context once."""
        from tpem_seg.runtime import gpu_buffers as gb

        spec = self.input_spec
        self._in_shape = (self._max_batch, spec.channels, *spec.tile)
        self._out_shape = (self._max_batch, spec.classes, *spec.tile)
        self._stream = gb.Stream()
        self._d_in = gb.DeviceBuffer(np.prod(self._in_shape) * 4)
        self._d_out = gb.DeviceBuffer(np.prod(self._out_shape) * 4)
        self._h_in = gb.PinnedArray(self._in_shape)
        self._h_out = gb.PinnedArray(self._out_shape)
        self._context.set_tensor_address(self._input_name, self._d_in.ptr)
        self._context.set_tensor_address(self._output_name, self._d_out.ptr)

    def _engine_record(self) -> engines.EngineRecord:
        """The given engine if it fits this machine, else the cached one that does (built if allowed)."""
        if self.record is None:
            config = self.engine_config or engines.EngineConfig(precision=self.precision)
            return engines.load_or_build(self.package, self.precision, self.device, self.build, config)
        problem = engines.engine_status(self.record, engines.machine_info(self.device), self.precision,
                                        engines.onnx_sha256(self.package))
        if problem:
            raise engines.EngineMissing(f"cannot run {self.record.plan.name}: {problem}; rebuild it with "
                                        f"`{engines.build_command(self.package, self.precision)}`")
        return self.record

    def _io_names(self, trt) -> tuple[str, str]:
        """The engine's input and output tensor names; both must be float32."""
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise PackageError(f"{self.record.plan} has inputs {inputs} and outputs {outputs}; rebuild it")
        for name in (inputs[0], outputs[0]):
            if self._engine.get_tensor_dtype(name) != trt.float32:
                raise PackageError(f"{self.record.plan}: tensor {name} is not float32; rebuild it")
        return inputs[0], outputs[0]

    def describe(self) -> str:
        if self.record is None:
            return super().describe()
        return f"{self.name} on {self.device} ({self.precision}; {self.record.plan.name})"

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for ``batch`` (N, C, D, H, W); batches larger than the engine's profile run in chunks."""
        parts = [self._run(batch[i:i + self._max_batch]) for i in range(0, batch.shape[0], self._max_batch)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        from tpem_seg.runtime import gpu_buffers as gb

        n = chunk.shape[0]
        self._h_in.array[:n] = chunk
        in_bytes = chunk.nbytes
        out_bytes = n * int(np.prod(self._out_shape[1:])) * 4
        gb.copy_to_device(self._d_in, self._h_in, in_bytes, self._stream)
        if not self._context.set_input_shape(self._input_name, chunk.shape):
            raise RuntimeError(f"TensorRT rejected input shape {chunk.shape}")
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT messages above)")
        gb.copy_to_host(self._h_out, self._d_out, out_bytes, self._stream)
        self._stream.synchronize()
        return self._h_out.array[:n].copy()

    def _close(self) -> None:
        for name in ("_h_in", "_h_out", "_d_in", "_d_out", "_stream"):
            resource = getattr(self, name, None)
            if resource is not None:
                resource.close()
                setattr(self, name, None)
        self._context = None
        self._engine = None
        self._runtime = None
