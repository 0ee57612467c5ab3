"""sha256 of ``tpem-seg run`` outputs for both bundled models on the real stacks: refactors must keep them.

Runs the CLI (a subprocess per case, as users run it) on two vesselNN stacks with vessels-2p (their
TIFFs carry no voxel size, so the model's is assumed: the streaming z-slab path) and on a crop of the
cellfinder two-channel stack with tpem-2ch (its file says 5x2x2 µm: the resampled path; and at the
model's voxel size through ``--spacing``), with labels and ``--probabilities``, on the torch and ONNX
Runtime backends, plus a ``--skip-empty`` and a ``--tta`` case. The checksum is over the decoded array (dtype, shape, bytes), so
file metadata such as timestamps does not count.

    PYTHONPATH=$PWD python benchmarks/house_checksums.py --data /work/shared/data \
        -o benchmarks/results/house_checksums_before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VESSELS = ("burgess2014_noisySparseVessels", "poon2015_plaqueVessels")
#: Crop of the cellfinder stack (C, Z, Y, X): small enough for a 2-core CPU, ragged against the tile.
CELLFINDER_CROP = (slice(None), slice(0, 18), slice(100, 260), slice(200, 410))


def array_sha256(path: Path) -> dict:
    from tpem_seg.io import read_volume

    volume = read_volume(path)
    data = np.ascontiguousarray(np.asarray(volume.data))
    digest = hashlib.sha256(f"{data.dtype.str}{data.shape}".encode())
    digest.update(data.tobytes())
    return {"sha256": digest.hexdigest(), "shape": list(data.shape), "dtype": data.dtype.str}


def cases(data: Path, crop: Path) -> list[tuple[str, list[str]]]:
    """``(name, CLI arguments after 'run IN')`` for every case."""
    out = []
    for name in VESSELS:
        src = str(data / "vesselnn_2pm" / "images" / f"{name}.tif")
        out.append((name, [src, "-m", "vessels-2p"]))
    out.append(("cellfinder_crop_resampled", [str(crop), "-m", "tpem-2ch", "--channels", "0,1"]))
    out.append(("cellfinder_crop_native", [str(crop), "-m", "tpem-2ch", "--channels", "0,1", "--spacing", "5,1,1"]))
    runs = []
    for name, args in out:
        for backend in ("torch", "onnxruntime"):
            for probabilities in (False, True):
                kind = "probabilities" if probabilities else "labels"
                runs.append((f"{name}/{backend}/{kind}", args + ["--backend", backend]
                             + (["--probabilities"] if probabilities else [])))
    first = str(data / "vesselnn_2pm" / "images" / f"{VESSELS[0]}.tif")
    runs.append((f"{VESSELS[0]}/onnxruntime/labels/skip-empty",
                 [first, "-m", "vessels-2p", "--backend", "onnxruntime", "--skip-empty"]))
    runs.append((f"{VESSELS[0]}/onnxruntime/probabilities/skip-empty",
                 [first, "-m", "vessels-2p", "--backend", "onnxruntime", "--skip-empty", "--probabilities"]))
    runs.append(("cellfinder_crop_native/onnxruntime/probabilities/tta",
                 [str(crop), "-m", "tpem-2ch", "--channels", "0,1", "--spacing", "5,1,1", "--backend", "onnxruntime",
                  "--tta", "--probabilities"]))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON file for the checksums")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--only", default=None, help="run only cases whose name contains this")
    parser.add_argument("--skip", default=None, help="leave out cases whose name contains this")
    args = parser.parse_args()
    from tpem_seg.io import read_volume, write_volume

    # One thread: on a shared CPU a spinning OpenMP team makes torch runs many times slower; the
    # thread count is part of what the checksums hold (reductions may split differently).
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = read_volume(args.data / "cellfinder_stpt" / "cellfinder_crop_2ch_CZYX.tif")
        crop = write_volume(tmp / "cellfinder_crop.tif", np.asarray(source.data[CELLFINDER_CROP]), "CZYX",
                            spacing=source.spacing)
        for name, cli_args in cases(args.data, crop):
            if (args.only and args.only not in name) or (args.skip and args.skip in name):
                continue
            dst = tmp / (name.replace("/", "_") + ".tif")
            command = [sys.executable, "-m", "tpem_seg.cli", "run", *cli_args, "-o", str(dst), "--no-progress",
                       "--device", "cpu"]
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{name} failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
            results[name] = {**array_sha256(dst), "seconds": round(time.perf_counter() - started, 1),
                             "command": " ".join(["tpem-seg", "run", *cli_args])}
            print(f"{name}: {results[name]['sha256'][:16]} {results[name]['shape']} "
                  f"({results[name]['seconds']} s)", flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(results, indent=1) + "\n")  # after each case: a stopped run keeps them


if __name__ == "__main__":
    main()
