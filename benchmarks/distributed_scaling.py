"""Distributed runs on 1 and 2 local workers: parallel efficiency, redundancy, scheduler overhead,
and a run-time model for more workers built from those figures.

Measured (vessels-2p, ONNX Runtime, 1 thread per worker, a synthetic stack with bright tubes so
that every tile runs the network):

- per run: wall time of ``run_distributed`` on a ready cluster, the sum of the blocks' busy
  seconds (on the workers), parallel efficiency = busy / (workers x wall), tiles over one pass's;
- per block: mean busy seconds, bytes read (input window) and written (its chunks, compressed);
- scheduler overhead per task: wall of 200 no-op tasks through the same cluster / 200.

The model: ``T(W) = max(N t / W, N s, N (r + w) / B)`` for N blocks of busy time t, overhead s per
task, r + w bytes per block and a storage bandwidth B (an assumption, given with ``--storage-gbps``,
not measured here). It says at which W the scheduler (t / s) or the storage (t B / (r + w)) becomes
the limit. A GPU block is faster than this CPU's; ``--gpu-speedup`` scales t for the model only.

    python benchmarks/distributed_scaling.py --workdir /tmp/tpem-scaling

Writes benchmarks/results/distributed_scaling.json and .md (with the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPE, BLOCK, SPACING = (16, 384, 512), (16, 128, 128), (5.0, 0.994, 0.994)


def make_volume(path: Path) -> None:
    from tpem_seg.io import write_volume

    rng = np.random.default_rng(0)
    data = rng.normal(300, 30, SHAPE).astype(np.uint16)
    for y in range(20, SHAPE[1], 40):
        data[:, y:y + 6, :] = 2500  # tubes in every tile: the network runs everywhere
    write_volume(path, data, "ZYX", spacing=SPACING)


def chunk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in (folder / "0").rglob("*") if f.is_file() and f.name != "zarr.json")


def one_run(client, src: Path, dst: Path, workers: int) -> dict:
    from tpem_seg.distributed import run_distributed
    from tpem_seg.runtime.blocks import block_core, block_plan, n_blocks
    from tpem_seg.runtime.pipeline import make_plan

    results = []
    started = time.perf_counter()
    summary = run_distributed(src, dst, "vessels-2p", client=client, backend="onnxruntime", device="cpu",
                              block=BLOCK, on_block=results.append)
    wall = time.perf_counter() - started
    busy = sum(r.seconds for r in results)
    grid = make_plan(SHAPE, (16, 64, 64), 0.25)  # vessels-2p's tile, the default overlap
    read = np.mean([np.prod(block_plan(grid, block_core(SHAPE, BLOCK, i)).padded) * 2
                    for i in range(n_blocks(SHAPE, BLOCK))])
    return {"workers": workers, "wall_s": round(wall, 2), "busy_s": round(busy, 2),
            "efficiency": round(busy / (workers * wall), 3), "blocks": len(results),
            "block_busy_s": round(busy / len(results), 3), "redundancy": summary.extra["redundancy"],
            "read_bytes_per_block": int(read), "written_bytes_per_block": int(chunk_bytes(dst) / len(results)),
            "summary": summary.line()}


def scheduler_overhead(client, n: int = 200) -> float:
    started = time.perf_counter()
    futures = [client.submit(int, i, key=f"noop-{i}-{time.time_ns()}", pure=False) for i in range(n)]
    client.gather(futures)
    return (time.perf_counter() - started) / n


def model(t: float, s: float, io_bytes: float, storage_gbps: float, workers: int) -> dict:
    """Seconds per block at W workers, and which term limits it."""
    terms = {"compute": t / workers, "scheduler": s, "storage": io_bytes / (storage_gbps * 1e9)}
    limit = max(terms, key=terms.get)
    return {"workers": workers, "s_per_block": terms[limit], "limit": limit}


def main() -> None:
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--storage-gbps", type=float, default=1.0, help="assumed shared storage bandwidth, GB/s")
    parser.add_argument("--gpu-speedup", type=float, default=20.0, help="assumed GPU block speed-up, for the model")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    src = args.workdir / "in.zarr"
    if not src.exists():
        make_volume(src)
    runs, overhead = [], None
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            runs.append(one_run(client, src, args.workdir / f"out{workers}.zarr", workers))
            if workers == 2:
                overhead = scheduler_overhead(client)
        print(runs[-1], flush=True)
    base = runs[0]
    io_bytes = base["read_bytes_per_block"] + base["written_bytes_per_block"]
    t_gpu = base["block_busy_s"] / args.gpu_speedup
    modelled = [model(t_gpu, overhead, io_bytes, args.storage_gbps, w) for w in (1, 2, 4, 8, 16, 32, 64)]
    command = f"python benchmarks/distributed_scaling.py --workdir {args.workdir}"
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"load average {os.getloadavg()[0]:.1f} at the end")
    record = {"command": command, "machine": machine, "shape": SHAPE, "block": BLOCK, "runs": runs,
              "scheduler_s_per_task": overhead, "storage_gbps_assumed": args.storage_gbps,
              "gpu_speedup_assumed": args.gpu_speedup, "model": modelled}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "distributed_scaling.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = ["# Distributed runs: parallel efficiency, redundancy, scheduler overhead, a model", "",
             f"Command: `{command}` ({machine}; vessels-2p, ONNX Runtime, 1 thread per worker, "
             f"{'x'.join(map(str, SHAPE))} uint16, blocks {'x'.join(map(str, BLOCK))})", "",
             "| workers | wall | busy (sum over blocks) | efficiency | blocks | busy per block | redundancy |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['wall_s']} s | {r['busy_s']} s | {r['efficiency']:.2f} | {r['blocks']} | "
              f"{r['block_busy_s']} s | x{r['redundancy']:.2f} |" for r in runs]
    lines += ["", f"Per block: {base['read_bytes_per_block'] / 1e6:.2f} MB read (window), "
              f"{base['written_bytes_per_block'] / 1e3:.1f} kB written (zstd chunks). Scheduler: "
              f"{overhead * 1e3:.2f} ms per task (200 no-op tasks, 2 workers).", "",
              f"Model (assumed: storage {args.storage_gbps} GB/s, a GPU block {args.gpu_speedup}x this CPU's "
              f"{base['block_busy_s']} s):", "", "| workers | s per block | limit |", "|---|---|---|"]
    lines += [f"| {m['workers']} | {m['s_per_block'] * 1e3:.1f} ms | {m['limit']} |" for m in modelled]
    (args.results / "distributed_scaling.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
