"""Per-tile network time of the CPU configurations around the OpenVINO backend, one process each,
alternated over rounds: OpenVINO bf16 at batch 2/4/8/16, bf16 without the instance-norm fusion
(the export's decomposed graph as it is), fp32; against the previous tuned winner (torch bf16,
batch 8) and ONNX Runtime fp32 (batch 2). Each on the same real tiles (those the tuner samples),
labels and probabilities compared with the package's fp32 reference (torch).

Wall and CPU milliseconds per tile (best of two passes after a warm-up call); on a shared machine
the load average is recorded and the ratios to the first configuration are what to read.

    python benchmarks/openvino_tiles.py STACK.tif OUT.json [--model vessels-2p] [--rounds 3] [--tiles 24] [--configs A,B]

writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: name -> (backend, precision, batch size, fuse instance norms)
CONFIGS = {
    "torch-bf16-b8": ("torch", "bf16", 8, True),
    "openvino-bf16-b8": ("openvino", "bf16", 8, True),
    "openvino-bf16-b4": ("openvino", "bf16", 4, True),
    "openvino-bf16-b2": ("openvino", "bf16", 2, True),
    "openvino-bf16-b16": ("openvino", "bf16", 16, True),
    "openvino-bf16-b8-unfused": ("openvino", "bf16", 8, False),
    "openvino-fp32-b8": ("openvino", "fp32", 8, True),
    "onnxruntime-fp32-b2": ("onnxruntime", "fp32", 2, True),
}


def child(name: str, model: str, tiles_path: str, out_path: str) -> None:
    """Time one configuration in this (fresh) process; print its figures as JSON."""
    from tpem_seg.models import open_package
    from tpem_seg.runtime.backends import create_backend
    from tpem_seg.runtime.devices import cpu_count

    backend_name, precision, batch, fuse = CONFIGS[name]
    if not fuse:
        from tpem_seg.runtime.backends import openvino_backend

        openvino_backend.fuse_instance_norms = lambda model: 0  # the graph as exported
    package = open_package(model)
    tiles = np.load(tiles_path)
    with create_backend(backend_name, package, device="cpu", precision=precision, threads=cpu_count(),
                        batch_size=batch) as backend:
        backend.infer(tiles[:batch])
        best_wall, best_cpu = float("inf"), float("inf")
        for _ in range(2):
            wall, cpu = time.perf_counter(), time.process_time()
            logits = np.concatenate([backend.infer(tiles[i:i + batch]) for i in range(0, len(tiles), batch)])
            best_wall = min(best_wall, (time.perf_counter() - wall) / len(tiles))
            best_cpu = min(best_cpu, (time.process_time() - cpu) / len(tiles))
    np.save(out_path, logits)
    print(json.dumps({"wall_ms": 1000 * best_wall, "cpu_ms": 1000 * best_cpu}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="vessels-2p")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiles", type=int, default=24)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, from: " + ", ".join(CONFIGS))
    args = parser.parse_args(argv)
    from tpem_seg.io import read_volume
    from tpem_seg.models import open_package
    from tpem_seg.runtime.backends import create_backend, unavailable
    from tpem_seg.runtime.compare import compare_logits
    from tpem_seg.runtime.devices import cpu_model
    from tpem_seg.runtime.tune import sample_tiles

    package = open_package(args.model)
    work = Path(tempfile.mkdtemp(prefix="openvino-tiles-"))
    tiles = sample_tiles(read_volume(args.stack), package, n=args.tiles)
    np.save(work / "tiles.npy", tiles)
    with create_backend("torch", package, device="cpu") as ref:
        reference = np.concatenate([ref.infer(tiles[i:i + 2]) for i in range(0, len(tiles), 2)])
    names = [n for n in args.configs.split(",") if unavailable(CONFIGS[n][0], "cpu", CONFIGS[n][1], package) is None]
    samples: dict[str, list[dict]] = {n: [] for n in names}
    for round_ in range(args.rounds):
        for name in names:
            load = os.getloadavg()[0]
            done = subprocess.run([sys.executable, __file__, "--child", name, args.model, str(work / "tiles.npy"),
                                   str(work / f"{name}.npy")], check=True, capture_output=True, text=True)
            samples[name].append({**json.loads(done.stdout.strip().splitlines()[-1]), "load_1min": load})
            print(f"round {round_ + 1}: {name}: {samples[name][-1]}", file=sys.stderr, flush=True)
    first = statistics.median(s["wall_ms"] for s in samples[names[0]])
    rows = []
    for name in names:
        a = compare_logits(np.load(work / f"{name}.npy"), reference, package.manifest.classes,
                           package.manifest.activation)
        wall = statistics.median(s["wall_ms"] for s in samples[name])
        rows.append({"config": name, "wall_ms_per_tile": wall, "cpu_ms_per_tile": statistics.median(
            s["cpu_ms"] for s in samples[name]), "vs_first": first / wall, "voxel_agreement": a.voxel_agreement,
            "max_abs_prob_diff": a.max_abs_prob_diff, "samples": samples[name]})
    command = "python benchmarks/openvino_tiles.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = {"command": command, "cpu": cpu_model(), "cores": os.cpu_count(), "tiles": len(tiles),
              "rounds": args.rounds, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    loads = [s["load_1min"] for r in rows for s in r["samples"]]
    lines = [f"Command: `{command}`", "", f"Machine: {result['cpu']}, {result['cores']} cores; {len(tiles)} tiles of "
             f"`{args.stack}`, `{args.model}`; {args.rounds} alternated rounds, one process per configuration and "
             f"round; load average (1 min) {min(loads):.1f}-{max(loads):.1f}.", "",
             f"| configuration | wall ms/tile | CPU ms/tile | speed vs {names[0]} | labels equal to torch fp32 "
             "| max abs dp |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['wall_ms_per_tile']:.1f} | {r['cpu_ms_per_tile']:.1f} | {r['vs_first']:.2f}x "
              f"| {r['voxel_agreement']:.4%} | {r['max_abs_prob_diff']:.2e} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:6])
        sys.exit(0)
    sys.exit(main())
