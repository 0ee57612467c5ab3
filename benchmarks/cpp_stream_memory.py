"""Peak memory of the native streaming path (``tpem_stream_*``) for a 0.5 GB and a 2 GB volume.

Each run is a fresh Python process that opens a model through the binding (``tpem_seg_cpp``),
opens a stream over ``(1, Z, Y, X)`` uint16 (or float32) and pushes the planes one by one, each made when it is
pushed (the volume is never held). Its peak RSS is the process's VmHWM. The stream keeps the planes
the current tile row reads and one stitch window (tile depth x Y x X per class), so with wide planes
the two peaks should be close whatever the depth.

Plane content is real: plane k is plane ``k mod 25`` of the vesselNN stack poon2015_BBB_Leakage
(512 x 512 uint8), mirrored into a 4 x 4 mosaic for 2048 x 2048 (scaled by 257 for uint16), with a
per-plane shift so no two planes repeat. libtpem runs every tile (it has no empty-tile skip), so the
content changes what comes out, not the work. Normalisation: fixed (low, high) fitted on the first 8
planes, as an acquisition would take them from a reference stack.

The network is a stand-in: one 1x1x1 convolution (a threshold at normalised intensity 0.5) in a
package with the bundled vessels-2p's tile (16 x 64 x 64) and settings (:func:`build_package`), so the
48 000 tiles cost seconds on a shared 2-core machine instead of hours. The stream's memory (planes
kept, padded slab, stitch window, finished slab) is set by tile depth and plane size, not by the
network; a real network adds its ONNX Runtime arena, the same in both runs.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cpp_stream_memory.py --out benchmarks/results/cpp_memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "vesselnn_2pm" / "images" / "poon2015_BBB_Leakage.tif"

CHILD = """
import json, sys, time, numpy as np, tifffile, tpem_seg_cpp

def hwm_mb():
    return [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0] / 1024

package, source, z, side, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
dtype = np.dtype(sys.argv[6])
stack = tifffile.imread(source)                        # (25, 512, 512) uint8, 6.5 MB
reps = side // stack.shape[1]
def plane(k):
    p = stack[k % stack.shape[0]].astype(dtype) * (257 if dtype == np.uint16 else 1)
    row = np.concatenate([p if i % 2 == 0 else p[:, ::-1] for i in range(reps)], axis=1)
    mosaic = np.concatenate([row if j % 2 == 0 else row[::-1] for j in range(reps)], axis=0)
    return np.roll(mosaic, 7 * k, axis=1)[None].copy()  # (1, side, side)
model = tpem_seg_cpp.Model(package, threads=threads)
low, high = model.fit_normalization(np.concatenate([plane(k) for k in range(8)])[None])
opened_mb = hwm_mb()
counts = np.zeros(len(model.classes), np.int64)
done = [0]
def on_slab(z0, block):
    assert z0 == done[0]
    done[0] += block.shape[0]
    counts[:] += np.bincount(block.ravel(), minlength=len(counts))
stream = model.stream((1, z, side, side), dtype, on_slab, low=low, high=high)
started = time.perf_counter()
for k in range(z):
    stream.push(plane(k))
stream.finish()
assert done[0] == z
print(json.dumps({"peak_mb": hwm_mb(), "after_open_mb": opened_mb, "stream_s": time.perf_counter() - started,
                  "label_counts": counts.tolist()}))
"""


def build_package(dst: Path) -> Path:
    """A package whose network is one 1x1x1 convolution: logits (-4, 4) * (x - 0.5), i.e. vessel where
    the normalised intensity passes 0.5, with the bundled vessels-2p's tile (16 x 64 x 64), channels,
    classes, voxel size and normalisation. libtpem reads only those from the manifest (the manifest
    still names the UNETR config the tile comes from); the network's cost is then negligible."""
    import torch

    from tpem_seg.export.package import package_from_model
    from tpem_seg.models import Manifest, NormalizationSpec, get_config

    conv = torch.nn.Conv3d(1, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-4.0, 4.0]).reshape(2, 1, 1, 1, 1))
        conv.bias.copy_(torch.tensor([2.0, -2.0]))
    manifest = Manifest(name=dst.stem, config=get_config("unetr-t16", in_channels=1, out_channels=2),
                        channels=["vessel"], classes=["background", "vessel"],
                        normalization=NormalizationSpec(percentiles=(1.0, 99.8)), spacing=(5.0, 0.994, 0.994),
                        description="1x1x1 convolution threshold in place of a network: streaming memory benchmark")
    return package_from_model(conv.eval(), manifest, dst, include_weights=False).path


def run(package: Path, depth: int, side: int, threads: int, dtype: str) -> dict:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(package), str(SOURCE), str(depth), str(side), str(threads),
                          dtype],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the streaming child failed ({out.returncode}): {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(planes=depth, volume_gb=depth * side * side * np.dtype(dtype).itemsize / 1e9,
                  seconds=time.perf_counter() - started)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="64,256", help="planes of the smaller and the larger volume")
    parser.add_argument("--side", type=int, default=2048, help="Y = X of the planes (a multiple of 512)")
    parser.add_argument("--dtype", choices=("uint16", "float32"), default="uint16", help="of the pushed planes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="results path without suffix (.json and .md)")
    args = parser.parse_args(argv)
    command = "PYTHONPATH=$PWD " + " ".join([Path(sys.executable).name, *sys.argv])
    depths = [int(d) for d in args.depths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        package = build_package(Path(tmp) / "stream1ch.tpem")
        runs = [run(package, depth, args.side, args.threads, args.dtype) for depth in depths]
    small, large = runs[0], runs[-1]
    record = {"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
              "package": "stand-in network (one 1x1x1 convolution, a threshold) with vessels-2p's tile 16x64x64, "
                         "1 channel -> 2 classes, overlap 0.25",
              "plane": [args.side, args.side], "dtype": args.dtype, "threads": args.threads, "runs": runs,
              "peak_ratio": large["peak_mb"] / small["peak_mb"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# Native streaming memory: peak RSS against volume size", "", f"Command: `{command}`", "",
             f"Machine: {record['machine']}. Network: {record['package']}. ONNX Runtime threads: {args.threads}.", "",
             f"Each run: a fresh Python process pushing {args.side}x{args.side} {args.dtype} planes, made one at a "
             "time from the real vesselNN stack poon2015_BBB_Leakage, through `tpem_seg_cpp.Model.stream` "
             "(`tpem_stream_push`); peak = the process's VmHWM (model open and ONNX Runtime included).", "",
             "| planes | volume | RSS after model open | peak RSS | stream time |", "| --- | --- | --- | --- | --- |",
             *[f"| {r['planes']} | {r['volume_gb']:.2f} GB | {r['after_open_mb']:.0f} MB | {r['peak_mb']:.0f} MB | "
               f"{r['stream_s']:.0f} s |" for r in runs], "",
             f"Peak ratio ({large['volume_gb']:.2f} GB / {small['volume_gb']:.2f} GB): {record['peak_ratio']:.3f} "
             "(goal: at most 1.3).", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
