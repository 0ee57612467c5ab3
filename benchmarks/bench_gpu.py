"""The whole GPU comparison in one go: tpem-seg configurations against the PyTorch baseline.

Default: the reference UNETR (unetr-b16, ViT-B, 128³ tiles, random weights, seeded) on a
synthetic 2x64x512x512 volume (25 tiles), on one CUDA GPU, within about 8 minutes including the
ONNX export of the package, torch.compile and any TensorRT engine build (configurations still not
warmed up when --budget seconds have passed are skipped, and say so):

    python benchmarks/bench_gpu.py OUTDIR                       # on a GPU machine
    python benchmarks/bench_gpu.py OUTDIR --device cpu --model unetr-test --shape 16,64,64   # proof run on a CPU

Writes OUTDIR/bench_gpu.json and OUTDIR/bench_gpu.md (each with this command) and prints the table.

Configurations, cheapest first (the budget cuts from the end):
  baseline                       MONAI sliding_window_inference, PyTorch eager fp32, on the GPU
  torch-fp32                     tpem-seg GPU path (pinned buffers, copy stream, GPU blending/argmax), eager fp32
  torch-fp16                     same, fp16 autocast, batch from free GPU memory
  torch-fp16-compile-graphs      + torch.compile(mode="reduce-overhead"): CUDA graphs, fixed batch
  torch-bf16-compile-graphs      bf16 instead
  onnxruntime-fp32               ONNX Runtime with the CUDA provider (TensorRT provider when installed)
  onnxruntime-fp16               ONNX Runtime's TensorRT provider at fp16 (where installed)
  tensorrt-fp16, tensorrt-fp32   the tensorrt backend (engines built on first use here: TPEM_SEG_TENSORRT_BUILD=1)
Targets: end-to-end >= 4x the baseline, pipeline efficiency >= 90% (benchmarks/results/README_section.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

GPU_CONFIGS = ("torch-fp32", "torch-fp16", "torch-fp16-compile-graphs", "torch-bf16-compile-graphs",
               "onnxruntime-fp32", "onnxruntime-fp16", "tensorrt-fp16", "tensorrt-fp32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--model", default="unetr-b16", help="architecture (random weights) or package path")
    parser.add_argument("--shape", default="64,512,512", help="synthetic volume Z,Y,X (channels: the model's)")
    parser.add_argument("--input", default=None, help="a real volume instead of the synthetic one")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--configs", default=",".join(GPU_CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=330.0,
                        help="seconds after which configurations not yet warmed up are skipped")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TPEM_SEG_TENSORRT_BUILD", "1")  # build a missing engine on first use

    from tpem_seg.runtime import bench as B
    from tpem_seg.cli.bench import bench_cache_dir, resolve_bench_model

    started = time.perf_counter()
    command = "python benchmarks/bench_gpu.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    package = resolve_bench_model(args.model, bench_cache_dir())
    spec = args.input or f"synthetic:{args.shape}"
    volume, info = B.load_input(spec, package.manifest.config.in_channels)
    settings = B.BenchSettings(repeats=args.repeats, budget_s=args.budget)
    configs = [B.BenchConfig.parse(name, args.device) for name in args.configs.split(",")]
    print(f"package ready after {time.perf_counter() - started:.0f} s; {len(configs)} configurations + baseline",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tpem-bench-gpu-") as workdir:
        runners = B.make_runners(package, configs, settings, args.device, Path(workdir))
        report = B.run_bench(volume, package, runners, settings, command=command, input_info=info,
                             progress=lambda line: print(line, file=sys.stderr, flush=True))
    report.machine["script_seconds"] = time.perf_counter() - started
    B.write_report(report, args.outdir / "bench_gpu.json", args.outdir / "bench_gpu.md")
    print(B.markdown_table(report))
    print(f"wrote {args.outdir / 'bench_gpu.md'} and .json in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return 1 if any(r.status == "failed" for r in report.records) else 0


if __name__ == "__main__":
    sys.exit(main())
