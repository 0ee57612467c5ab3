"""The harness: load every runner, warm each up, then timed rounds interleaved, then the figures.

Method (nanoGPT ``bench.py`` style): every configuration is loaded, then warmed up (its first run
returns logits, which give the agreement figures and include any compilation), then the timed
repeats run interleaved (round r: every configuration once, end to end and then its network alone),
so a change in the machine's load hits all of them, and both figures of one configuration, alike;
medians and spread are reported. CUDA is synchronised around every timing; end-to-end runs return
host arrays, so they are synchronous by construction. One :class:`BenchRun` carries the state of
a run through its phases.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from tpem_seg.io import Volume
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.bench.config import BenchRecord, BenchReport, BenchSettings, Timing
from tpem_seg.runtime.bench.inputs import plan_tiles_for
from tpem_seg.runtime.bench.machine import machine_info
from tpem_seg.runtime.bench.memory import GpuMemorySampler, HostMemory, synchronize
from tpem_seg.runtime.compare import compare_probabilities

log = logging.getLogger(__name__)


@dataclass
class BenchRun:
    """The state of one benchmark run, from loading to the figures.

    probabilities: each configuration's first-run probabilities ``(K, Z, Y, X)`` (for agreement);
    labels: each configuration's last timed labels ``(Z, Y, X)``; gpu_peak_used_mb: the device's
    peak used memory during each configuration's runs.
    """

    volume: Volume
    package: ModelPackage
    settings: BenchSettings
    device: str
    tiles: np.ndarray
    records: dict[str, BenchRecord]
    progress: Callable[[str], None]
    host: HostMemory = field(default_factory=HostMemory)
    started: float = field(default_factory=time.perf_counter)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    gpu_peak_used_mb: dict[str, float] = field(default_factory=dict)

    def over_budget(self) -> bool:
        budget = self.settings.budget_s
        return budget is not None and time.perf_counter() - self.started > budget

    def skip(self, rec: BenchRecord, reason: str) -> None:
        rec.status, rec.reason = "skipped", reason
        self.progress(f"{rec.name}: skipped ({reason})")

    def ok(self, runners: Sequence) -> list:
        return [r for r in runners if self.records[r.config.name].status == "ok"]


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
    device = runners[0].config.device
    records = {r.config.name: BenchRecord(r.config.name, r.config) for r in runners}
    if len(records) != len(runners):
        raise ValueError(f"configuration names repeat: {[r.config.name for r in runners]}")
    run = BenchRun(volume, package, settings, device, plan_tiles_for(volume, package, settings), records, progress)
    manifest = package.manifest
    n_tiles, n_voxels = len(run.tiles), int(np.prod(volume.shape_zyx))
    flops_per_tile = unetr_flops(manifest.config)
    progress(f"{n_tiles} tiles of {'x'.join(map(str, manifest.tile))}, {flops_per_tile / 1e9:.1f} GFLOP each")

    gpu_idle_mb = GpuMemorySampler(device).used_mb() if device.startswith("cuda") else None
    precisions = {r.config.precision for r in runners}
    peaks_start = matmul_peaks(device, precisions, settings)
    active = _load_all(run, runners)
    if not active or active[0] is not runners[0]:
        raise RuntimeError(f"the baseline could not run: {records[runners[0].config.name].reason}")
    _warm_up(run, active)
    _timed_runs(run, run.ok(active))
    # A peak is the best seen: measured before and after, as the machine's load may change.
    peaks_end = matmul_peaks(device, precisions, settings)
    peaks = {p: max(peaks_start[p], peaks_end[p]) for p in peaks_start}

    baseline = records[runners[0].config.name]
    for runner in run.ok(active):
        rec = records[runner.config.name]
        rec.tiles, rec.voxels = n_tiles, n_voxels
        _derive(rec, baseline, flops_per_tile, peaks)
        used = run.gpu_peak_used_mb.get(rec.name)
        if used is not None and gpu_idle_mb is not None:
            rec.peak_gpu_mb = used - gpu_idle_mb
        if runner is not runners[0]:
            rec.agreement = compare_probabilities(
                run.probabilities[rec.name], run.probabilities[baseline.name], manifest.classes,
                manifest.activation, labels=run.labels[rec.name], reference_labels=run.labels[baseline.name])
            rec.agrees = rec.agreement.within_limits(runner.config.precision)
        runner.close()
    report = BenchReport(command, machine_info(device), input_info or {}, package_info(package), settings,
                         flops_per_tile, peaks, [records[r.config.name] for r in runners], started_at)
    report.machine["load_average"] = load_start
    report.machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report.seconds = time.perf_counter() - run.started
    return report


def _load_all(run: BenchRun, runners: Sequence) -> list:
    active = []
    for runner in runners:
        rec = run.records[runner.config.name]
        reason = runner.unavailable()
        if reason is None and active and run.over_budget():
            reason = f"time budget of {run.settings.budget_s:.0f} s spent before it was loaded"
        if reason is not None:
            run.skip(rec, reason)
            continue
        before = run.host.current_mb()
        started = time.perf_counter()
        if _guarded(rec, runner.load) is not FAILED:
            rec.load_seconds = time.perf_counter() - started
            after = run.host.current_mb()
            rec.load_rss_mb = after - before if after is not None and before is not None else None
            rec.description = runner.describe()
            active.append(runner)
    return active


def _warm_up(run: BenchRun, active: Sequence) -> None:
    """First runs: probabilities (kept, for agreement), and any compilation."""
    for runner in active:
        rec = run.records[runner.config.name]
        if run.probabilities and run.over_budget():
            run.skip(rec, f"time budget of {run.settings.budget_s:.0f} s spent before its warm-up")
            continue
        started = time.perf_counter()
        probabilities = _guarded(rec, lambda: runner.probabilities(run.volume))
        if probabilities is FAILED:
            continue
        rec.first_run_seconds = time.perf_counter() - started
        run.probabilities[rec.name] = probabilities
        for _ in range(run.settings.warmup - 1):
            if _guarded(rec, lambda: runner.labels(run.volume)) is FAILED:
                break
        rec.description = runner.describe()
        run.progress(f"{rec.name}: warm-up {rec.first_run_seconds:.1f} s")
    baseline = run.records[active[0].config.name]
    if baseline.name not in run.probabilities:
        raise RuntimeError(f"the baseline failed: {baseline.reason}")


def _timed_runs(run: BenchRun, active: Sequence) -> None:
    """Interleaved rounds: every configuration runs end to end (labels), then its network alone on
    the same tiles, right after, so both see the same load (runners whose network cannot be run
    alone, ``times_network`` False, get end-to-end figures only). Keeps the last labels of each."""
    for runner in active:
        _guarded(run.records[runner.config.name], lambda: runner.prepare_network(run.tiles))
    e2e: dict[str, list[float]] = {r.config.name: [] for r in active}
    net: dict[str, list[float]] = {r.config.name: [] for r in active}
    network_repeats = run.settings.network_repeats or run.settings.repeats
    rounds = max(run.settings.repeats, network_repeats)
    for round_ in range(rounds):
        for runner in active:
            rec = run.records[runner.config.name]
            if rec.status == "ok" and round_ < run.settings.repeats:
                seconds = _end_to_end(run, runner, rec)
                if seconds is not FAILED:
                    e2e[rec.name].append(seconds)
            if rec.status == "ok" and round_ < network_repeats and runner.times_network:
                synchronize(run.device)
                started = time.perf_counter()
                if _guarded(rec, runner.network_pass) is not FAILED:
                    net[rec.name].append(time.perf_counter() - started)
            if rec.status == "ok":
                network = f"{net[rec.name][-1]:.2f} s" if net[rec.name] else "not timed"
                run.progress(f"round {round_ + 1}/{rounds} {rec.name}: end-to-end "
                             f"{e2e[rec.name][-1] if e2e[rec.name] else float('nan'):.2f} s, network {network}")
    for runner in active:
        rec = run.records[runner.config.name]
        if rec.status == "ok":
            rec.end_to_end = Timing(e2e[rec.name]) if e2e[rec.name] else None
            rec.network = Timing(net[rec.name]) if net[rec.name] else None
            rec.batch_size = runner.batch_size()
        runner.prepare_network(run.tiles[:0])  # release the batches


def _end_to_end(run: BenchRun, runner, rec: BenchRecord):
    """One timed end-to-end run with its memory figures: its seconds, or FAILED."""
    before = run.host.current_mb()
    run.host.reset_peak()
    sampler = GpuMemorySampler(run.device) if run.device.startswith("cuda") else None
    gpu_before = sampler.used_mb() if sampler else None
    started = time.perf_counter()
    if sampler:
        with sampler:
            labels = _guarded(rec, lambda: runner.labels(run.volume))
    else:
        labels = _guarded(rec, lambda: runner.labels(run.volume))
    seconds = time.perf_counter() - started
    if labels is FAILED:
        return FAILED
    run.labels[rec.name] = labels
    peak = run.host.peak_mb()
    rec.peak_rss_mb = max(rec.peak_rss_mb or 0.0, peak or 0.0)
    if before is not None and peak is not None:
        rec.run_rss_mb = max(rec.run_rss_mb or 0.0, peak - before)
    if sampler:
        run.gpu_peak_used_mb[rec.name] = max(run.gpu_peak_used_mb.get(rec.name, 0.0), sampler.peak_mb)
        rec.run_gpu_mb = max(rec.run_gpu_mb or 0.0, sampler.peak_mb - gpu_before)
    return seconds


def matmul_peaks(device: str, precisions: set[str], settings: BenchSettings) -> dict[str, float]:
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


def _derive(rec: BenchRecord, baseline: BenchRecord, flops_per_tile: int, peaks: dict[str, float]) -> None:
    if rec.end_to_end is not None:
        rec.voxels_per_s = rec.voxels / rec.end_to_end.median
        if baseline.end_to_end is not None:
            rec.speedup = baseline.end_to_end.median / rec.end_to_end.median
    if rec.network is not None:
        rec.network_tiles_per_s = rec.tiles / rec.network.median
        rec.achieved_flops = flops_per_tile * rec.tiles / rec.network.median
        if rec.end_to_end is not None:
            rec.pipeline_efficiency = rec.network.median / rec.end_to_end.median
        peak = peaks.get(rec.config.precision)
        if peak:
            rec.peak_flops = peak
            rec.fraction_of_peak = rec.achieved_flops / peak


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


def package_info(package: ModelPackage) -> dict:
    m = package.manifest
    return {"name": m.name, "path": str(package.path), "config": m.config.to_dict(), "tile": list(m.tile),
            "channels": list(m.channels), "classes": list(m.classes),
            "normalization": m.normalization.to_dict(), "description": m.description}
