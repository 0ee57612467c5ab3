"""Distributed runs on 1 and 2 local workers: parallel efficiency, redundancy, scheduler overhead,
and a run-time model for more workers built from those figures.

Measured (vessels-2p, ONNX Runtime, 1 thread per worker, a synthetic stack with bright tubes so
that every tile runs the network):

- per run: wall time of ``run_distributed`` on a ready cluster, the sum of the blocks' busy
  seconds (on the workers), parallel efficiency = busy / (workers x wall), tiles over one pass's;
- per block: mean busy seconds, bytes read (input window) and written (its chunks, compressed);
- scheduler overhead per task: wall of 200 no-op tasks through the same cluster / 200.

The model: ``T(W) = max(N t / W, N s, N W (r + w) / (W B))``, i.e. per block the largest of
``t / W`` (compute), ``s`` (the scheduler) and ``(r + w) / B`` (shared storage), for N blocks of busy
time t, overhead s per task, r + w bytes per block and a storage bandwidth B (an assumption, given
with ``--storage-gbps``, not measured here). It says at which W the scheduler (``t / s``) or the
storage (``t B / (r + w)``) becomes the limit. It is evaluated twice: for the measured small blocks,
and for a default-size block core (64x1024x1024) of a large volume, whose t is its tile count times
the measured busy seconds per tile, whose reads are its uint16 window and whose writes are its uint8
labels uncompressed (an upper bound). A GPU block is faster than this CPU's; ``--gpu-speedup``
scales t for the model only.

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

from tpem_seg.runtime.pipeline import make_plan

HERE = Path(__file__).resolve().parent
SHAPE, BLOCK, SPACING = (16, 384, 512), (16, 128, 128), (5.0, 0.994, 0.994)
TILE, OVERLAP = (16, 64, 64), 0.25  # vessels-2p's tile, the default overlap
#: The modelled default block: an interior 64x1024x1024 core of a 256x4096x4096 volume.
BIG_SHAPE, BIG_CORE = (256, 4096, 4096), ((64, 128), (1024, 2048), (1024, 2048))


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
    results = []
    started = time.perf_counter()
    summary = run_distributed(src, dst, "vessels-2p", client=client, backend="onnxruntime", device="cpu",
                              block=BLOCK, on_block=results.append)
    wall = time.perf_counter() - started
    busy = sum(r.seconds for r in results)
    grid = make_plan(SHAPE, TILE, OVERLAP)
    read = np.mean([np.prod(block_plan(grid, block_core(SHAPE, BLOCK, i)).padded) * 2
                    for i in range(n_blocks(SHAPE, BLOCK))])
    return {"workers": workers, "wall_s": round(wall, 2), "busy_s": round(busy, 2),
            "efficiency": round(busy / (workers * wall), 3), "blocks": len(results),
            "tiles": sum(r.tiles for r in results), "tile_busy_s": round(busy / sum(r.tiles for r in results), 4),
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


def limits(t: float, s: float, io_bytes: float, storage_gbps: float) -> dict:
    """Worker counts at which the scheduler and the storage become the limit of a block of time t."""
    return {"block_s": t, "io_bytes": io_bytes, "scheduler_limit_workers": t / s,
            "storage_limit_workers": t * storage_gbps * 1e9 / io_bytes}


def default_block_figures(tile_busy_s: float) -> dict:
    """Tiles and bytes of the modelled default block (:data:`BIG_CORE` of :data:`BIG_SHAPE`)."""
    from tpem_seg.runtime.blocks import block_plan

    plan = block_plan(make_plan(BIG_SHAPE, TILE, OVERLAP), BIG_CORE)
    core_voxels = int(np.prod([hi - lo for lo, hi in BIG_CORE]))
    read = int(np.prod(plan.padded)) * 2
    return {"core": [hi - lo for lo, hi in BIG_CORE], "tiles": plan.n_tiles, "busy_s": plan.n_tiles * tile_busy_s,
            "read_bytes": read, "written_bytes": core_voxels, "io_bytes": read + core_voxels}


def main() -> None:
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--storage-gbps", type=float, default=1.0, help="assumed shared storage bandwidth, GB/s")
    parser.add_argument("--gpu-speedup", type=float, default=20.0, help="assumed GPU block speed-up, for the model")
    parser.add_argument("--model-only", action="store_true",
                        help="redo the model and the report from the results' JSON, measuring nothing")
    args = parser.parse_args()
    if args.model_only:
        return write(args, json.loads((args.results / "distributed_scaling.json").read_text()))
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
    command = f"python benchmarks/distributed_scaling.py --workdir {args.workdir}"
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"load average {os.getloadavg()[0]:.1f} at the end")
    record = {"command": command, "machine": machine, "shape": SHAPE, "block": BLOCK, "runs": runs,
              "speedup_2_workers": round(runs[0]["wall_s"] / runs[1]["wall_s"], 3), "scheduler_s_per_task": overhead}
    write(args, record)


def write(args, record: dict) -> None:
    """Add the model (from the measured figures and the assumptions in ``args``), write .json and .md."""
    base, overhead = record["runs"][0], record["scheduler_s_per_task"]
    blocks = {"measured": {"busy_s": base["block_busy_s"],
                           "io_bytes": base["read_bytes_per_block"] + base["written_bytes_per_block"]},
              "default": default_block_figures(base["tile_busy_s"])}
    for b in blocks.values():
        t_gpu = b["busy_s"] / args.gpu_speedup
        b["model"] = [model(t_gpu, overhead, b["io_bytes"], args.storage_gbps, w) for w in (1, 2, 4, 8, 16, 32, 64)]
        b["limits"] = limits(t_gpu, overhead, b["io_bytes"], args.storage_gbps)
    record.update(storage_gbps_assumed=args.storage_gbps, gpu_speedup_assumed=args.gpu_speedup,
                  blocks_modelled=blocks)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "distributed_scaling.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.results / "distributed_scaling.md").write_text(report(record) + "\n")


def report(record: dict) -> str:
    runs, blocks, base = record["runs"], record["blocks_modelled"], record["runs"][0]
    lines = ["# Distributed runs: parallel efficiency, redundancy, scheduler overhead, a model", "",
             f"Command: `{record['command']}` ({record['machine']}; vessels-2p, ONNX Runtime, 1 thread per worker, "
             f"{'x'.join(map(str, SHAPE))} uint16, blocks {'x'.join(map(str, BLOCK))})", "",
             "| workers | wall | busy (sum over blocks) | efficiency | blocks | busy per block | redundancy |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['wall_s']} s | {r['busy_s']} s | {r['efficiency']:.2f} | {r['blocks']} | "
              f"{r['block_busy_s']} s | x{r['redundancy']:.2f} |" for r in runs]
    default = blocks["default"]
    lines += ["", f"2 workers ran {record['speedup_2_workers']:.2f}x faster than 1. Per block: "
              f"{base['read_bytes_per_block'] / 1e6:.2f} MB read (window), "
              f"{base['written_bytes_per_block'] / 1e3:.1f} kB written (zstd chunks); {base['tile_busy_s']} s busy "
              f"per tile. Scheduler: {record['scheduler_s_per_task'] * 1e3:.2f} ms per task (200 no-op tasks, "
              "2 workers).", "",
              f"Model (assumed: storage {record['storage_gbps_assumed']} GB/s, a GPU block "
              f"{record['gpu_speedup_assumed']}x this CPU's). Default block: a {'x'.join(map(str, default['core']))} "
              f"core of a {'x'.join(map(str, BIG_SHAPE))} volume, {default['tiles']} tiles (the measured "
              f"seconds per tile), {default['read_bytes'] / 1e6:.0f} MB read, {default['written_bytes'] / 1e6:.0f} MB "
              "written (labels, uncompressed).", "",
              "| workers | measured block: s per block | limit | default block: s per block | limit |",
              "|---|---|---|---|---|"]
    lines += [f"| {m['workers']} | {m['s_per_block'] * 1e3:.1f} ms | {m['limit']} | {d['s_per_block']:.3f} s | "
              f"{d['limit']} |" for m, d in zip(blocks["measured"]["model"], default["model"])]
    for name, b in blocks.items():
        lim = b["limits"]
        lines += ["", f"{name.capitalize()} block ({lim['block_s']:.3f} s on the modelled GPU, "
                  f"{lim['io_bytes'] / 1e6:.1f} MB of I/O): the scheduler limits from "
                  f"{lim['scheduler_limit_workers']:.0f} workers, the storage from {lim['storage_limit_workers']:.0f}."]
    return "\n".join(lines)

if __name__ == "__main__":
    main()
