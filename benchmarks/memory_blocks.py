"""Peak host memory of `tpem-seg run` with wide planes: one pass in z-slabs (--block off) vs blocks.

The three inputs of the scale-out issue (vessels-2p, ONNX Runtime, CPU): 20x1024x3072 uint16 at
the model's voxel size, the same at 0.7 µm in-plane (resampled), 20x4096x4096 uint16. The volumes
are synthetic: dim noise with bright tubes in a few places, so that ``--skip-empty`` (the default
here, to keep a 2-core run short; the issue used it on the third row only; ``--no-skip-empty`` runs
every tile through the network) runs the network on a few percent of the tiles. Memory, the subject, is held by the slabs, stitch windows and outputs,
which do not depend on it. Each run is its own process; its peak RSS comes from wait4's rusage.
A resampled run always goes by blocks now (the whole-volume path is gone), so its row has no
``off`` run. ``--rows ratio`` runs the block path on a ~0.5 GB and a ~2 GB volume of wide planes
(16x4096x4096 and 16x8192x8192 uint16), at the model's voxel size and resampled from 0.7 µm, and
reports the ratio of each pair's peaks. ``--output zarr`` writes OME-Zarr, which takes each block as
it is done; a TIFF output (the default) takes rows of blocks, whole planes ``block[0]`` deep, so its
peak grows with the plane.

    python benchmarks/memory_blocks.py --workdir /tmp/tpem-mem-blocks
    python benchmarks/memory_blocks.py --workdir /tmp/tpem-mem-blocks --no-skip-empty --name memory_blocks_noskip
    python benchmarks/memory_blocks.py --workdir /tmp/tpem-mem-blocks --rows ratio --output zarr --name memory_blocks_ratio

Writes benchmarks/results/memory_blocks.json and memory_blocks.md (with the command).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tpem_seg.util import atomic

HERE = Path(__file__).resolve().parent
MODEL_SPACING = (5.0, 0.994, 0.994)
ROWS = [  # name, shape, spacing given to the run, block settings to compare
    ("20x1024x3072, model voxel size", (20, 1024, 3072), MODEL_SPACING, ("off", "auto")),
    ("20x1024x3072 at 0.7 µm (resampled)", (20, 1024, 3072), (5.0, 0.7, 0.7), ("auto",)),
    ("20x4096x4096, model voxel size", (20, 4096, 4096), MODEL_SPACING, ("off", "auto")),
]
RATIO_ROWS = [  # the block path's peak should not grow with the volume: 2 GB vs 0.5 GB, in pairs
    ("16x4096x4096 (~0.5 GB), model voxel size", (16, 4096, 4096), MODEL_SPACING, ("auto",)),
    ("16x8192x8192 (~2 GB), model voxel size", (16, 8192, 8192), MODEL_SPACING, ("auto",)),
    ("16x4096x4096 (~0.5 GB) at 0.7 µm (resampled)", (16, 4096, 4096), (5.0, 0.7, 0.7), ("auto",)),
    ("16x8192x8192 (~2 GB) at 0.7 µm (resampled)", (16, 8192, 8192), (5.0, 0.7, 0.7), ("auto",)),
]


def make_volume(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    """Dim noise (100 +- 10) with bright tubes (2000) along x in a few bands of y, plane by plane."""
    from tpem_seg.io import open_writer

    if path.exists():
        return
    rng = np.random.default_rng(seed)
    z, y, x = shape
    with open_writer(path, shape, np.uint16, "ZYX", spacing=MODEL_SPACING) as writer:
        for _ in range(z):
            plane = rng.normal(100, 10, (y, x)).astype(np.uint16)
            for band in range(0, y, 512):
                plane[band + 100:band + 108, x // 4:3 * x // 4] = 2000
            writer.write(plane[None])


def run_one(src: Path, dst: Path, spacing, block: str, skip_empty: bool = True) -> dict:
    command = [sys.executable, "-m", "tpem_seg.cli", "run", str(src), "-o", str(dst), "-m", "vessels-2p",
               "--backend", "onnxruntime", "--device", "cpu", "--no-progress",
               *(["--skip-empty"] if skip_empty else []),
               "--spacing", ",".join(map(str, spacing)), "--block", block]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"run failed: {' '.join(command)}\n{stderr[-3000:]}")
    atomic.remove(dst)
    return {"block": block, "peak_rss_mb": round(usage.ru_maxrss / 1024), "wall_s": round(wall, 1),
            "summary": stderr.strip().splitlines()[-1], "command": " ".join(["tpem-seg", *command[3:]])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the synthetic volumes")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--only", default=None, help="run only the rows whose input name contains this")
    parser.add_argument("--name", default="memory_blocks", help="results file name (without .json/.md)")
    parser.add_argument("--skip-empty", action=argparse.BooleanOptionalAction, default=True,
                        help="run with --skip-empty (default) or every tile through the network")
    parser.add_argument("--rows", choices=("issue", "ratio"), default="issue",
                        help="the issue's three inputs, or the 0.5 GB vs 2 GB pair")
    parser.add_argument("--block", default=None, help="run only this --block setting (off or auto)")
    parser.add_argument("--output", choices=("tif", "zarr"), default="tif",
                        help="output format: a TIFF takes rows of blocks (whole planes), OME-Zarr each block")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, shape, spacing, blocks in ROWS if args.rows == "issue" else RATIO_ROWS:
        if args.only and args.only not in name:
            continue
        src = args.workdir / ("x".join(map(str, shape)) + ".tif")
        make_volume(src, shape)
        for block in blocks if args.block is None else [b for b in blocks if b == args.block]:
            result = run_one(src, args.workdir / f"out.{args.output}", spacing, block, args.skip_empty)
            rows.append({"input": name, "shape": list(shape), "input_mb": round(np.prod(shape) * 2 / 1e6), **result})
            print(f"{name} --block {block}: {result['peak_rss_mb']} MB, {result['wall_s']} s", flush=True)
            write_results(args, rows)  # after every run: a long benchmark stopped early keeps what it measured


def write_results(args, rows: list[dict]) -> None:
    command = "python benchmarks/memory_blocks.py --workdir " + str(args.workdir) + \
        (f" --only '{args.only}'" if args.only else "") + ("" if args.skip_empty else " --no-skip-empty") + \
        (" --rows ratio" if args.rows == "ratio" else "") + (f" --block {args.block}" if args.block else "") + \
        (f" --name {args.name}" if args.name != "memory_blocks" else "") + \
        (f" --output {args.output}" if args.output != "tif" else "")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{args.name}.json").write_text(json.dumps({"command": command, "machine": machine,
                                                                 "rows": rows}, indent=1) + "\n")
    lines = ["# Peak host memory with wide planes: z-slabs (`--block off`) vs blocks (`--block auto`)", "",
             f"Command: `{command}` ({machine}; vessels-2p, ONNX Runtime, "
             f"{'`--skip-empty`' if args.skip_empty else 'no `--skip-empty`: every tile through the network'} "
             f"on every row, output .{args.output})", "",
             "| input (uint16) | MB | --block | peak RSS | wall | run summary |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['input']} | {r['input_mb']} | {r['block']} | {r['peak_rss_mb']} MB | {r['wall_s']} s "
                     f"| {r['summary'].split(': ', 1)[-1]} |")
    if args.rows == "ratio":
        lines.append("")
        for small, large in zip(rows[::2], rows[1::2]):
            lines.append(f"- Peak RSS ratio, {large['input']} vs {small['input']} (block path): "
                         f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x")
    (args.results / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
