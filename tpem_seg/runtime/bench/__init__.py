"""Benchmarks: tpem-seg configurations against the PyTorch baseline a lab runs today.

The baseline is MONAI's ``sliding_window_inference`` over the torch backend (the package's own
weights, ``model.pt``, eager FP32), with the same tile, overlap and Gaussian blending, on the same
volume normalised the same way. Every configuration (backend x precision x options) segments the
same volume through :class:`~tpem_seg.runtime.segmenter.Segmenter`.

Per configuration (:class:`BenchRecord`): end-to-end voxels/s and the ratio to the baseline;
network-only time for the same tiles (batches already in the backend's memory) and the pipeline
efficiency, network-only / end-to-end; peak host RSS and GPU memory; achieved FLOP/s against the
measured matmul peak at the same precision; agreement with the baseline
(:mod:`tpem_seg.runtime.compare`). The machine goes into every report.

One module per job: :mod:`.config` (configurations, settings, records), :mod:`.machine`,
:mod:`.inputs`, :mod:`.memory`, :mod:`.runners` (thin adapters over backends), :mod:`.harness`
(the run and its state), :mod:`.report`. torch and MONAI are needed (the baseline is PyTorch);
they are imported inside functions, as is ``tpem_seg_cpp`` (the native runtime's configuration,
skipped with the reason where it is not installed).
"""

from tpem_seg.runtime.bench.config import (BASELINE, NATIVE, BenchConfig, BenchRecord, BenchReport, BenchSettings,
                                           Timing)
from tpem_seg.runtime.bench.harness import BenchRun, run_bench
from tpem_seg.runtime.bench.inputs import load_input, parse_crop, plan_tiles_for, simulated_stack
from tpem_seg.runtime.bench.machine import machine_info
from tpem_seg.runtime.bench.report import markdown_report, markdown_table, write_report
from tpem_seg.runtime.bench.runners import (BaselineRunner, NativeRunner, SegmenterRunner, default_configs,
                                            make_runners)

__all__ = ["BASELINE", "NATIVE", "BaselineRunner", "BenchConfig", "BenchRecord", "BenchReport", "BenchRun",
           "BenchSettings", "NativeRunner", "SegmenterRunner", "Timing", "default_configs", "load_input",
           "machine_info", "make_runners", "markdown_report", "markdown_table", "parse_crop", "plan_tiles_for", "run_bench",
           "simulated_stack", "write_report"]
