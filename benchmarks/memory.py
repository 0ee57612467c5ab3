"""Peak host memory of `tpem-seg run` on synthetic uint16 volumes of about 0.5 GB and 2 GB.

The streaming pipeline holds one z-slab (tile depth x Y x X) of logits, not the
volume, so the 4x larger volume should need about the same peak RSS. Each run is
a separate process; its peak RSS comes from wait4's rusage.

    python benchmarks/memory.py --workdir /tmp/tpem-mem [--overlap 0]

Writes benchmarks/results/memory.json and memory.md (the command is recorded in both).
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

HERE = Path(__file__).resolve().parent
SIZES_GB = (0.5, 2.0)
YX = (1024, 1024)


def make_volume(path: Path, gigabytes: float, seed: int = 0) -> tuple[int, int, int]:
    """A uint16 ZYX TIFF of about ``gigabytes`` GB (1e9 bytes), written slab by slab."""
    from tpem_seg.io import open_writer

    z = int(round(gigabytes * 1e9 / (2 * YX[0] * YX[1])))
    rng = np.random.default_rng(seed)
    if path.exists() and path.stat().st_size >= z * YX[0] * YX[1] * 2:
        return (z, *YX)
    with open_writer(path, (z, *YX), np.uint16, "ZYX", spacing=(2.0, 1.0, 1.0)) as writer:
        for z0 in range(0, z, 16):
            writer.write(rng.integers(0, 4096, (min(16, z - z0), *YX), dtype=np.uint16))
    return (z, *YX)


def make_package(path: Path) -> Path:
    """unetr-test-sized network, 1 channel -> 2 classes, random weights."""
    import torch

    from tpem_seg.export.package import package_from_model
    from tpem_seg.models import Manifest, create_model, get_config

    if (path / "manifest.json").exists():
        return path
    torch.manual_seed(0)
    config = get_config("unetr-test", in_channels=1, out_channels=2)
    manifest = Manifest(name="memory-bench", config=config, channels=["signal"], classes=["background", "fg"],
                        description="random weights, for the memory benchmark")
    package_from_model(create_model(config), manifest, path)
    return path


def peak_rss_of(command: list[str]) -> tuple[int, float]:
    """Peak RSS in bytes and wall seconds of ``command`` run as a child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed with {os.waitstatus_to_exitcode(status)}")
    return usage.ru_maxrss * 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tpem-mem"))
    parser.add_argument("--overlap", type=float, default=0.0, help="tile overlap (0 keeps the run short)")
    parser.add_argument("--backend", default="onnxruntime")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    package = make_package(args.workdir / "memory-bench.tpem")
    records = []
    for gigabytes in SIZES_GB:
        src = args.workdir / f"volume_{gigabytes:g}GB.tif"
        shape = make_volume(src, gigabytes)
        dst = args.workdir / f"labels_{gigabytes:g}GB.tif"
        command = [sys.executable, "-m", "tpem_seg.cli", "run", str(src), "-o", str(dst), "--model", str(package),
                   "--backend", args.backend, "--overlap", str(args.overlap), "--no-progress"]
        rss, seconds = peak_rss_of(command)
        records.append({"input_gb": src.stat().st_size / 1e9, "shape_zyx": shape, "peak_rss_mb": rss / 2**20,
                        "seconds": seconds, "mvox_per_s": np.prod(shape) / seconds / 1e6})
        print(f"{src.name}: {records[-1]}", file=sys.stderr)
    ratio = records[1]["peak_rss_mb"] / records[0]["peak_rss_mb"]
    result = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()},
              "runs": records, "rss_ratio_large_over_small": ratio, "target": "<= 1.3"}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "memory.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = "\n".join(f"| {r['input_gb']:.2f} GB | {'x'.join(map(str, r['shape_zyx']))} | {r['peak_rss_mb']:.0f} MB "
                     f"| {r['seconds']:.0f} s | {r['mvox_per_s']:.2f} |" for r in records)
    (HERE / "results" / "memory.md").write_text(
        f"# Peak host memory, streaming `tpem-seg run`\n\nCommand: `{result['command']}`\n\n"
        f"| input (uint16) | shape ZYX | peak RSS | wall | Mvox/s |\n|---|---|---|---|---|\n{rows}\n\n"
        f"Peak RSS ratio, 2 GB over 0.5 GB: **{ratio:.2f}** (target <= 1.3).\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
