"""The native runtime (libtpem) against the Python runtime on ONNX Runtime: speed, start-up, memory.

One run of each, on the same machine in the same invocation; the figures that matter are ratios.

- in process: ``tpem_seg_cpp.Model.segment`` vs ``Segmenter(..., backend=OnnxRuntimeBackend(threads=N))``
  on the same array, same ONNX Runtime threads, after one warm-up call each;
- fresh processes: ``tpem-seg-cpp run IN.npy OUT.npy`` vs ``tpem-seg run IN.npy -o OUT.npy
  --backend onnxruntime --device cpu`` (wall time and peak RSS of the child, start-up included);
- parity (``--parity``): labels and probabilities on every whole real volume.

Streaming memory (0.5 GB vs 2 GB pushed plane by plane) is benchmarks/cpp_stream_memory.py.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_cpp.py --threads 2 \\
        --out benchmarks/results/cpp_vessels-2p
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
DEFAULT_VOLUME = ROOT.parent / "shared" / "data" / "vesselnn_2pm" / "images" / "poon2015_BBB_Leakage.tif"

def _hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def run_child(argv: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a fresh child process.

    The peak is the child's VmHWM polled every 20 ms (it only grows, so the last reading before exit
    is the peak up to 20 ms of growth): wait4's ru_maxrss would start at this parent's RSS.
    """
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm_kb(proc.pid) or 0)
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{' '.join(argv)} failed: {stderr.read().decode()[-2000:]}")
    return seconds, peak / 1024


def in_process(package: Path, volume: np.ndarray, threads: int) -> dict:
    import tpem_seg_cpp
    from tpem_seg.models.package import open_package
    from tpem_seg.runtime.backends.ort_backend import OnnxRuntimeBackend
    from tpem_seg.runtime.segmenter import Segmenter

    native = tpem_seg_cpp.Model(package, threads=threads)
    python = Segmenter(package, backend=OnnxRuntimeBackend(open_package(package), device="cpu", threads=threads))
    native.segment(volume[:, :16])  # warm-up: session and arena
    python.segment(volume[:, :16], axes="CZYX")
    started = time.perf_counter()
    labels_native = native.segment(volume)
    native_s = time.perf_counter() - started
    started = time.perf_counter()
    labels_python = python.segment(volume, axes="CZYX")
    python_s = time.perf_counter() - started
    return {"native_s": native_s, "python_s": python_s, "speedup": python_s / native_s,
            "label_agreement": float((labels_native == labels_python).mean())}


def fresh_processes(package: Path, volume: np.ndarray, threads: int) -> dict:
    exe = Path(sys.executable).parent / "tpem-seg-cpp"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.npy"
        np.save(src, volume[0])
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        native = run_child([str(exe), "run", str(src), str(Path(tmp) / "native.npy"), "--model", str(package),
                            "--threads", str(threads)])
        python = run_child([sys.executable, "-m", "tpem_seg.cli", "run", str(src), "-o", str(Path(tmp) / "python.npy"),
                            "--model", str(package), "--backend", "onnxruntime", "--device", "cpu"], env=env)
        agreement = float((np.load(Path(tmp) / "native.npy") == np.load(Path(tmp) / "python.npy")).mean())
        # start-up alone: a volume of one tile
        np.save(src, volume[0, :16, :64, :64])
        native_start = run_child([str(exe), "run", str(src), str(Path(tmp) / "n1.npy"), "--model", str(package),
                                  "--threads", str(threads)])
        python_start = run_child([sys.executable, "-m", "tpem_seg.cli", "run", str(src), "-o",
                                  str(Path(tmp) / "p1.npy"), "--model", str(package), "--backend", "onnxruntime",
                                  "--device", "cpu"], env=env)
    return {"native_s": native[0], "python_s": python[0], "speedup": python[0] / native[0],
            "native_peak_mb": native[1], "python_peak_mb": python[1], "label_agreement": agreement,
            "one_tile_native_s": native_start[0], "one_tile_python_s": python_start[0],
            "startup_ratio": native_start[0] / python_start[0]}


def parity_cases(only: set[str] | None) -> list[tuple[str, Path, tuple[float, float, float]]]:
    """(package, volume path, voxel size z, y, x in µm) for every real volume, smallest first.

    Each package runs on the volumes whose channel count it takes: vessels-2p (one channel) on the six
    one-channel vesselNN stacks, tpem-2ch (two channels) on the two-channel cellfinder crop. Not run:
    tpem-2ch on vesselNN (one channel, the model needs two) and vessels-2p on cellfinder (two channels
    and no vessel channel among them: signal and autofluorescence).
    """
    import csv

    data = ROOT.parent / "shared" / "data"
    cases = []
    with open(data / "vesselnn_2pm" / "volumes.csv", newline="") as f:
        for row in csv.DictReader(f):
            # voxels the network sees: resampled to vessels-2p's (5, 0.994, 0.994) µm
            voxels = int(row["z"]) * int(row["y"]) * int(row["x"]) * (float(row["spacing_z_um"]) / 5.0) * \
                (float(row["spacing_y_um"]) / 0.994) * (float(row["spacing_x_um"]) / 0.994)
            cases.append((voxels, "vessels-2p", data / "vesselnn_2pm" / "images" / f"{row['name']}.tif",
                          tuple(float(row[f"spacing_{a}_um"]) for a in "zyx")))
    cases.append((2 * 30 * 510 * 667 * 4, "tpem-2ch", data / "cellfinder_stpt" / "cellfinder_crop_2ch_CZYX.tif",
                  (5.0, 2.0, 2.0)))
    return [case[1:] for case in sorted(cases, key=lambda c: c[0]) if only is None or case[2].stem in only]


def parity_one(package: str, path: Path, spacing: tuple[float, float, float], threads: int):
    """Native labels and probabilities against ``tpem-seg run --backend onnxruntime`` (labels, a fresh
    process, exactly as a user runs it) and the Python Segmenter's float32 logits on the same backend
    (probabilities: the CLI writes them as float16, too coarse for a 1e-4 tolerance).

    Yields the volume's record twice: with the labels figures, then with the probabilities' too.
    """
    import tifffile

    import tpem_seg_cpp
    from tpem_seg.runtime.outputs import to_probabilities
    from tpem_seg.runtime.segmenter import Segmenter

    volume = np.ascontiguousarray(tifffile.imread(path))
    volume = volume[None] if volume.ndim == 3 else volume
    pkg = ROOT / "tpem_seg" / "zoo" / f"{package}.tpem"
    seconds = {}
    started = time.perf_counter()
    native = tpem_seg_cpp.Model(pkg, threads=threads)
    labels = native.segment(volume, spacing=spacing)
    seconds["native_labels"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npy", Path(tmp) / "labels.npy"
        np.save(src, volume)
        started = time.perf_counter()
        run_child([sys.executable, "-m", "tpem_seg.cli", "run", str(src), "-o", str(dst), "--model", str(pkg),
                   "--backend", "onnxruntime", "--device", "cpu", "--axes", "CZYX",
                   "--spacing", ",".join(str(s) for s in spacing), "--no-progress"],
                  env=dict(os.environ, PYTHONPATH=str(ROOT)))
        seconds["python_cli_labels"] = time.perf_counter() - started
        expected = np.load(dst)
    record = {"package": package, "shape": list(volume.shape), "spacing": list(spacing),
              "model_spacing": native.info.get("spacing"), "labels_shape": list(labels.shape),
              "label_agreement": float((labels == expected).mean()),
              "labels_differing": int((labels != expected).sum()), "seconds": seconds}
    yield record
    del labels, expected
    started = time.perf_counter()
    probabilities = native.segment(volume, spacing=spacing, output="probabilities")
    seconds["native_probabilities"] = time.perf_counter() - started
    started = time.perf_counter()
    with Segmenter(pkg, backend="onnxruntime", device="cpu", output="logits") as python:
        logits = python.segment(volume, axes="CZYX", spacing=spacing)
    seconds["python_logits"] = time.perf_counter() - started
    difference = np.abs(probabilities - to_probabilities(logits, native.info["activation"]))
    yield dict(record, max_abs_prob_diff=float(difference.max()), mean_abs_prob_diff=float(difference.mean()))


def write_parity(args) -> int:
    """Run parity volume by volume, rewriting the JSON and md after each half (labels, probabilities)
    of each volume, so a cut run keeps its data."""
    command = "PYTHONPATH=$PWD " + " ".join([Path(sys.executable).name, *sys.argv])
    only = set(args.only.split(",")) if args.only else None
    record = {"command": command, "machine": machine(), "threads": args.threads,
              "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "volumes": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for package, path, spacing in parity_cases(only):
        for result in parity_one(package, path, spacing, args.threads):
            record["volumes"][path.stem] = result
            record["updated_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
            lines = parity_markdown(record)
            args.out.with_suffix(".md").write_text("\n".join(lines))
        sys.stdout.write(lines[-2] + "\n")
        sys.stdout.flush()
    return 0


def parity_markdown(record: dict) -> list[str]:
    def probability(v: dict, key: str, spec: str) -> str:
        return f"{v[key]:{spec}}" if key in v else "(not run yet)"

    return ["# Native runtime vs Python runtime (ONNX Runtime): parity on the whole real volumes", "",
            f"Command: `{record['command']}`", "", f"Machine: {record['machine']}. Threads: {record['threads']}. "
            f"Run {record['started_utc']} to {record['updated_utc']} UTC.", "",
            "Labels: `tpem_seg_cpp.Model.segment` vs `tpem-seg run --backend onnxruntime --device cpu` "
            "(fresh process). Probabilities: native float32 vs softmax of the Python Segmenter's "
            "float32 logits (ONNX Runtime).", "",
            "| volume | package | shape CZYX | voxel size (µm) | labels equal | voxels differing | "
            "max abs probability diff | mean abs diff |", "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *[f"| {k} | {v['package']} | {tuple(v['shape'])} | {tuple(v['spacing'])} | "
              f"{v['label_agreement']:.6f} | {v['labels_differing']} | {probability(v, 'max_abs_prob_diff', '.2e')} | "
              f"{probability(v, 'mean_abs_prob_diff', '.1e')} |" for k, v in record["volumes"].items()], ""]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs: " \
           f"timings are noisy)"


def write_memory(args, volume: np.ndarray) -> int:
    command = "PYTHONPATH=$PWD " + " ".join([Path(sys.executable).name, *sys.argv])
    fp = fresh_processes(args.package, volume, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "fresh_processes": fp}, indent=2) + "\n")
    lines = [f"# Native runtime vs Python runtime: peak memory ({args.package.name})", "", f"Command: `{command}`", "",
             f"Volume: {args.volume.name} {tuple(volume.shape[1:])} {volume.dtype}; peak = the child's VmHWM.", "",
             "| fresh process, whole stack | native `tpem-seg-cpp run` | Python `tpem-seg run` |", "| --- | --- | --- |",
             f"| wall time | {fp['native_s']:.2f} s | {fp['python_s']:.2f} s |",
             f"| peak RSS | {fp['native_peak_mb']:.0f} MB | {fp['python_peak_mb']:.0f} MB |", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=ROOT / "tpem_seg" / "zoo" / "vessels-2p.tpem")
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="results path without suffix (.json and .md)")
    parser.add_argument("--parity", action="store_true", help="instead: parity on every whole real volume")
    parser.add_argument("--only", help="with --parity: comma-separated volume names (file stems)")
    parser.add_argument("--memory", action="store_true",
                        help="instead: only the fresh-process wall time and peak memory")
    args = parser.parse_args(argv)
    if args.parity:
        return write_parity(args)

    import tifffile

    volume = np.ascontiguousarray(tifffile.imread(args.volume))[None]
    if args.memory:
        return write_memory(args, volume)
    results = {
        "command": "PYTHONPATH=$PWD " + " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "volume": f"{args.volume.name} {tuple(volume.shape[1:])} {volume.dtype}",
        "package": args.package.name, "threads": args.threads,
        "in_process": in_process(args.package, volume, args.threads),
        "fresh_processes": fresh_processes(args.package, volume, args.threads),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    ip, fp = results["in_process"], results["fresh_processes"]
    lines = [
        f"# Native runtime vs Python runtime on ONNX Runtime ({results['package']})", "",
        f"Command: `{results['command']}`", "",
        f"Machine: {results['machine']}. Volume: {results['volume']}. ONNX Runtime threads: {args.threads}.", "",
        "| what | native (libtpem) | Python (tpem_seg) | Python / native |", "| --- | --- | --- | --- |",
        f"| in process, one call | {ip['native_s']:.2f} s | {ip['python_s']:.2f} s | {ip['speedup']:.2f} |",
        f"| fresh process, whole stack | {fp['native_s']:.2f} s, {fp['native_peak_mb']:.0f} MB peak | "
        f"{fp['python_s']:.2f} s, {fp['python_peak_mb']:.0f} MB peak | {fp['speedup']:.2f} |",
        f"| fresh process, one tile (start-up) | {fp['one_tile_native_s']:.2f} s | {fp['one_tile_python_s']:.2f} s | "
        f"{1 / fp['startup_ratio']:.2f} |", "",
        f"Labels agree on {ip['label_agreement']:.6f} (in process) and {fp['label_agreement']:.6f} (fresh processes) "
        f"of the voxels.", "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
