"""Reports: one markdown table, a self-contained markdown page, and JSON, each with its command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tpem_seg.runtime.bench.config import BenchReport


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
        verdict = 'ref' if a is None else ('yes' if r.agrees else 'NO')
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
            f"| {verdict} |")
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
        "of probabilities; limits per precision in `tpem_seg.runtime.compare.LIMITS`).",
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
