"""Per-worker peak memory of distributed runs: set by the block, not by the volume.

Two OME-Zarr inputs of wide planes, one 8x the other (16x2048x4096 and 16x8192x8192 uint16, the
synthetic tubes of memory_blocks.py), run on a LocalCluster of 2 worker processes x 1 thread with
the default block (vessels-2p, ONNX Runtime, ``--skip-empty`` so that a 2-core run stays short;
the windows, stitch buffers and outputs that hold the memory do not depend on it). Each block
reports its worker's peak resident memory (Linux's VmHWM, ``BlockResult.peak_rss_mb``); a row is the
largest over the run's blocks, and the ratio of the two rows is what the scale-out issue bounds.
The driver's own peak (it fits the normaliser from a sample and holds no block) is given too.

    python benchmarks/distributed_memory.py --workdir /tmp/tpem-dist-mem

Writes benchmarks/results/distributed_memory.json and .md (with the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from memory_blocks import MODEL_SPACING, make_volume

HERE = Path(__file__).resolve().parent
SHAPES = [(16, 2048, 4096), (16, 8192, 8192)]


def one_run(client, src: Path, dst: Path) -> dict:
    from tpem_seg.distributed import run_distributed
    from tpem_seg.runtime.bench.memory import HostMemory

    results = []
    driver = HostMemory()
    driver.reset_peak()  # this process made the input just before: its peak is not the driver's
    started = time.perf_counter()
    summary = run_distributed(src, dst, "vessels-2p", client=client, backend="onnxruntime", device="cpu",
                              skip_empty=True, spacing=MODEL_SPACING, on_block=results.append)
    wall = time.perf_counter() - started
    shutil.rmtree(dst)
    per_worker: dict[str, int] = {}
    for r in results:
        per_worker[r.worker] = max(per_worker.get(r.worker, 0), r.peak_rss_mb)
    return {"blocks": len(results), "block": list(summary.extra["block"]), "wall_s": round(wall, 1),
            "worker_peak_rss_mb": max(per_worker.values()), "per_worker_mb": sorted(per_worker.values()),
            "driver_peak_rss_mb": round(driver.peak_mb() or 0), "driver_peak_scope": driver.scope,
            "summary": summary.line()}


def main() -> None:
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the synthetic volumes")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in SHAPES:
        src = args.workdir / ("x".join(map(str, shape)) + ".zarr")
        make_volume(src, shape)
        # a fresh cluster per input: a worker's peak is its lifetime's
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            row = {"shape": list(shape), "input_mb": round(np.prod(shape) * 2 / 1e6),
                   **one_run(client, src, args.workdir / "out.zarr")}
        rows.append(row)
        print(row, flush=True)
        write_results(args, rows)  # after every run: a stopped benchmark keeps what it measured


def write_results(args, rows: list[dict]) -> None:
    command = f"python benchmarks/distributed_memory.py --workdir {args.workdir}"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "distributed_memory.json").write_text(
        json.dumps({"command": command, "machine": machine, "rows": rows}, indent=1) + "\n")
    lines = ["# Per-worker peak memory of distributed runs", "",
             f"Command: `{command}` ({machine}; vessels-2p, ONNX Runtime, LocalCluster of 2 worker processes x "
             "1 thread, default block, `--skip-empty`)", "",
             "| input (uint16) | MB | blocks | block | worker peak RSS | per worker | driver peak RSS | wall |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {'x'.join(map(str, r['shape']))} | {r['input_mb']} | {r['blocks']} | "
              f"{'x'.join(map(str, r['block']))} | {r['worker_peak_rss_mb']} MB | "
              f"{', '.join(f'{m} MB' for m in r['per_worker_mb'])} | {r['driver_peak_rss_mb']} MB | {r['wall_s']} s |"
              for r in rows]
    if len(rows) == 2:
        small, large = rows
        lines += ["", f"Worker peak ratio, {large['input_mb']} MB vs {small['input_mb']} MB input: "
                      f"{large['worker_peak_rss_mb'] / small['worker_peak_rss_mb']:.2f}x"]
    (args.results / "distributed_memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
