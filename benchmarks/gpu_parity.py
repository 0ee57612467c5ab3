"""Parity and speed of every deployable precision against PyTorch fp32, in one run.

    python benchmarks/gpu_parity.py --config unetr-b16                 # random weights, 128^3 tiles
    python benchmarks/gpu_parity.py --package vessels.tpem --batch 4
    python benchmarks/gpu_parity.py --config unetr-test --device cpu   # the CPU smoke run

Rows, each against PyTorch fp32 on the same device and the same tiles (random + real-looking):
PyTorch fp16 and bf16 autocast (CUDA; bf16 also on the CPU), ONNX Runtime (CPU, or its CUDA /
TensorRT providers where installed), and TensorRT fp16 (norms held in FP32) and fp32 engines where
TensorRT is installed (built into a temporary copy of the package). Parity: max |probability
difference| and label agreement. Speed: milliseconds per batch as the Segmenter sees it (numpy
in, numpy out, host<->device copies included), median of ``--iters`` after ``--warmup``; the
speed-up is against PyTorch fp32 in the same run. Parts that cannot run here are skipped with
the reason. Prints a markdown table and writes JSON (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

log = logging.getLogger("gpu_parity")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One backend/precision: its parity against the reference and its speed."""

    backend: str
    device: str
    precision: str
    status: str = "ok"
    max_abs_prob_diff: float | None = None
    label_agreement: float | None = None
    ms_per_batch: float | None = None
    speedup: float | None = None
    detail: dict = field(default_factory=dict)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--package", type=Path, help="a model package (NAME.tpem)")
    source.add_argument("--config", help="a registry config, exported with random weights (e.g. unetr-b16)")
    parser.add_argument("--tile", help="override the config's tile, D,H,W (with --config)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu [auto]")
    parser.add_argument("--batch", type=int, default=2, help="tiles per call for timing [2]")
    parser.add_argument("--tiles", type=int, default=2, help="parity tiles per source (random, synthetic) [2]")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per row [5]")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first [2]")
    parser.add_argument("--no-tensorrt", action="store_true", help="skip building TensorRT engines")
    parser.add_argument("--json", type=Path, help="output JSON [benchmarks/results/gpu_parity_<name>_<device>.json]")
    return parser.parse_args(argv)


def package_for(args, workdir: Path):
    """The package to measure: a copy of ``--package`` (engines get built into it), or a fresh export."""
    from tpem_seg.models import open_package

    if args.package:
        return open_package(shutil.copytree(open_package(args.package).path, workdir / args.package.name))
    import torch

    from tpem_seg.export.checkpoints import ExportSource
    from tpem_seg.export.exporter import ExportOptions, ParityOptions, export_package
    from tpem_seg.models import create_model, get_config

    overrides = {"tile": tuple(int(t) for t in args.tile.split(","))} if args.tile else {}
    config = get_config(args.config, **overrides)
    torch.manual_seed(0)
    source = ExportSource(config, create_model(config).state_dict(), "state dict", Path(f"{args.config}.pt"),
                          "random weights")
    package, _ = export_package(source, ExportOptions(workdir / f"{args.config}.tpem",
                                                      parity=ParityOptions(random=1, real=1)))
    return package


def candidates(device: str) -> list[tuple[str, str, str]]:
    """(backend, device, precision) rows to try on ``device``, reference (torch fp32) first."""
    if device == "cpu":
        return [("torch", "cpu", "fp32"), ("onnxruntime", "cpu", "fp32"), ("torch", "cpu", "bf16")]
    return [("torch", device, "fp32"), ("torch", device, "fp16"), ("torch", device, "bf16"),
            ("onnxruntime", device, "fp32"), ("tensorrt", device, "fp16"), ("tensorrt", device, "fp32")]


def build_engine_row(package, device: str, precision: str, args) -> dict:
    """Build (with build parity against ONNX Runtime) the TensorRT engine the row needs."""
    from tpem_seg.export.engine_build import EngineParityOptions, build_checked_engine
    from tpem_seg.runtime import engines

    started = time.perf_counter()
    record, report = build_checked_engine(package, engines.EngineConfig(precision, engines.choose_profile(args.batch)),
                                          device, EngineParityOptions(args.tiles, args.tiles))
    return {"engine": record.plan.name, "build_seconds": round(time.perf_counter() - started, 1),
            "build_parity_vs_onnxruntime": report.max_abs_prob_diff}


def time_backend(backend, batch: np.ndarray, iters: int, warmup: int) -> float:
    """Median milliseconds per ``backend.infer(batch)`` call."""
    for _ in range(warmup):
        backend.infer(batch)
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        backend.infer(batch)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def measure(package, spec: tuple[str, str, str], reference: tuple[str, str, str], tiles, args) -> Row:
    from tpem_seg.export.parity import backend_parity
    from tpem_seg.runtime.backends import BackendSpec, create_backend

    row = Row(*spec)
    if spec[0] == "tensorrt":
        row.detail.update(build_engine_row(package, spec[1], spec[2], args))
    if spec != reference:
        report = backend_parity(package, BackendSpec(*reference), BackendSpec(*spec), tiles, batch_size=args.batch)
        row.max_abs_prob_diff, row.label_agreement = report.max_abs_prob_diff, report.label_agreement
    batch = np.ascontiguousarray(tiles.tiles[: args.batch])
    with create_backend(spec[0], package, device=spec[1], precision=spec[2]) as backend:
        row.ms_per_batch = time_backend(backend, batch, args.iters, args.warmup)
        row.detail["describe"] = backend.describe()
    return row


def machine(device: str) -> dict:
    import importlib.metadata as md

    info = {"python": platform.python_version(), "platform": platform.platform(), "device": device}
    for dist in ("tpem-seg", "torch", "monai", "onnxruntime", "onnxruntime-gpu", "tensorrt", "cuda-python"):
        try:
            info[dist] = md.version(dist)
        except md.PackageNotFoundError:
            info[dist] = None
    if device.startswith("cuda"):
        from tpem_seg.runtime.engines import gpu_identity
        from tpem_seg.runtime.devices import device_index

        info["gpu"], info["compute_capability"] = gpu_identity(device_index(device))
        try:
            import torch

            info["torch_tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                  "cudnn": torch.backends.cudnn.allow_tf32}
        except ImportError:
            pass
    else:
        from tpem_seg.runtime.devices import cpu_count, cpu_model

        info["cpu"], info["cores"] = cpu_model(), cpu_count()
    return info


def markdown(rows: list[Row]) -> str:
    lines = ["| backend | device | precision | max abs prob diff vs torch fp32 | label agreement | ms/batch | "
             "speed-up | status |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def fmt(value, spec):
            return "" if value is None else format(value, spec)

        lines.append(f"| {r.backend} | {r.device} | {r.precision} | {fmt(r.max_abs_prob_diff, '.2e')} | "
                     f"{fmt(None if r.label_agreement is None else 100 * r.label_agreement, '.4f')}"
                     f"{'%' if r.label_agreement is not None else ''} | {fmt(r.ms_per_batch, '.1f')} | "
                     f"{fmt(r.speedup, '.2f')}{'x' if r.speedup is not None else ''} | {r.status} |")
    return "\n".join(lines)


def measure_all(package, specs: list[tuple[str, str, str]], tiles, args) -> list[Row]:
    """A row per spec, against ``specs[0]``; rows that cannot run here are skipped with the reason
    the backend class gives."""
    from tpem_seg.runtime.backends import unavailable

    rows = []
    for spec in specs:
        # TensorRT rows build their engine here, so a missing one is no reason to skip them.
        options = {"build": True} if spec[0] == "tensorrt" else {}
        reason = "--no-tensorrt" if args.no_tensorrt and spec[0] == "tensorrt" else unavailable(*spec, package,
                                                                                                 **options)
        if reason:
            print(f"skipping {' '.join(spec)}: {reason}", file=sys.stderr)
            rows.append(Row(*spec, status=f"skipped: {reason}"))
            continue
        try:
            rows.append(measure(package, spec, specs[0], tiles, args))
        except Exception as err:  # one failing row must not lose the others; logged, and reported in the table
            log.exception("%s failed", spec)
            rows.append(Row(*spec, status=f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"))
    reference_ms = rows[0].ms_per_batch if rows[0].status == "ok" else None
    for row in rows:
        if row.ms_per_batch and reference_ms:
            row.speedup = reference_ms / row.ms_per_batch
    return rows


def run(args, command: str) -> dict:
    from tpem_seg.export.parity import parity_tiles
    from tpem_seg.runtime.devices import resolve_device

    device = resolve_device(args.device)
    gpu_only = []
    if not device.startswith("cuda"):
        print("no CUDA GPU in use: measuring the CPU rows only (torch fp16, ONNX Runtime CUDA and TensorRT are "
              "GPU-only)", file=sys.stderr)
        gpu_only = [Row(*spec, status="skipped: needs a CUDA GPU") for spec in candidates("cuda")[1:]]
    with tempfile.TemporaryDirectory(prefix="gpu-parity-") as tmp:
        package = package_for(args, Path(tmp))
        tiles = parity_tiles(package.manifest, args.tiles, args.tiles)
        rows = measure_all(package, candidates(device), tiles, args) + gpu_only
    return {"command": command, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"name": package.manifest.name, "config": package.manifest.config.to_dict()},
            "batch": args.batch, "tiles": tiles.sources, "iters": args.iters, "machine": machine(device),
            "reference": "torch fp32 on the same device", "rows": [asdict(r) for r in rows]}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    result = run(args, " ".join(["python benchmarks/gpu_parity.py", *words]))
    table = markdown([Row(**r) for r in result["rows"]])
    print(table)
    name = args.config or args.package.stem
    out = args.json or RESULTS / f"gpu_parity_{name}_{result['machine']['device'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "table": table}, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0 if all(not r["status"].startswith("failed") for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
