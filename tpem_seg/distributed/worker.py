"""The worker side: one backend per worker (a dask worker plugin), and the block task.

:class:`BackendPlugin` is registered once per run; dask runs its :meth:`~BackendPlugin.setup` on
every worker, including one that joins later or is restarted by its nanny after a crash, and
:meth:`~BackendPlugin.teardown` when the worker closes. It holds the worker's one loaded backend
(ONNX Runtime or torch threads = the worker's threads) and, per run, the opened input and the
prepared run (:meth:`~tpem_seg.runtime.segmenter.Segmenter.prepare` with the driver's normaliser).

:func:`run_block` is the task: a block already marked done returns at once (a retry after a
worker died past its marker, or a resumed run); otherwise it segments the block's core through
:meth:`~tpem_seg.runtime.segmenter.Segmenter.segment_block`, writes it, then marks it done.
"""

from __future__ import annotations

import logging
import threading
import time

from distributed import WorkerPlugin, get_worker

from tpem_seg.distributed.spec import BlockResult, RunSpec
from tpem_seg.distributed.store import BlockStore
from tpem_seg.errors import InputError
from tpem_seg.runtime.bench.memory import HostMemory
from tpem_seg.runtime.blocks import block_core

log = logging.getLogger(__name__)


class BackendPlugin(WorkerPlugin):
    """The worker plugin holding a worker's one loaded backend for a run.

    Args:
        spec: the run (only numbers and paths travel; the package is opened on the worker).
    """

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.name = spec.plugin_name
        self._segmenter = None
        self._inputs = None
        self._lock: threading.Lock | None = None  # made on the worker: the plugin travels pickled

    def setup(self, worker) -> None:
        from tpem_seg.models.package import open_package
        from tpem_seg.runtime import Segmenter
        from tpem_seg.runtime.backends import BackendSpec, backend_class, create_backend

        spec = self.spec
        self._lock = threading.Lock()
        package = open_package(spec.package)
        backend_spec = BackendSpec.from_dict(spec.backend)
        if "threads" in backend_class(backend_spec.name).OPTIONS and "threads" not in backend_spec.options:
            backend_spec = backend_spec.replace(options={"threads": int(worker.state.nthreads)})
        backend = create_backend(backend_spec, package).load()
        self._segmenter = Segmenter(package, backend=backend, output=spec.output, channels=spec.channels,
                                    resample=spec.resample, block=spec.block, **spec.tiles)
        log.info("worker %s: %s ready for run %s", worker.address, backend.describe(), spec.run_id)

    def teardown(self, worker) -> None:
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None
        if self._inputs is not None:
            self._inputs.volume.data.close()  # the reader's open file
            self._inputs = None

    def prepared(self):
        """The Segmenter and the run's prepared inputs (the volume opened once per worker)."""
        from tpem_seg.io import read_volume

        with self._lock:
            if self._inputs is None:
                spec = self.spec
                volume = read_volume(spec.source, axes=spec.axes, spacing=spec.spacing)
                if volume.shape_zyx != spec.shape:
                    volume.data.close()
                    raise InputError(f"{spec.source} is {volume.shape_zyx} on this worker but {spec.shape} on the "
                                     "driver; put the input on storage every worker sees")
                self._inputs = self._segmenter.prepare(volume, spec.normalizer)
            return self._segmenter, self._inputs


def run_block(spec: RunSpec, index: int) -> dict:
    """Segment block ``index`` of the run ``spec`` into its store; returns a :class:`BlockResult` as a dict."""
    worker = get_worker()
    store = BlockStore(spec.store)
    done = store.marker(index)
    if done is not None:
        return {**done, "already_done": True}
    started = time.perf_counter()
    segmenter, inputs = worker.plugins[spec.plugin_name].prepared()
    core = block_core(spec.shape, spec.block, index)
    output, state = segmenter.segment_block(inputs, core)
    store.write(core, output)
    voxels = 1
    for lo, hi in core:
        voxels *= hi - lo
    peak_mb = round(HostMemory().peak_mb() or 0)
    result = BlockResult(index, state.tiles, state.skipped, time.perf_counter() - started, voxels,
                         segmenter.backend.describe(), worker.address, peak_mb)
    store.mark_done(index, result.to_dict())
    return result.to_dict()
