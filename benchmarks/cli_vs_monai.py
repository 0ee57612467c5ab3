"""Whole processes, as users run them: `tpem-seg run` against the 20-line MONAI script
(benchmarks/monai_script.py), alternated, on one stack; wall time per process and label agreement.

The first `tpem-seg run` finds no tuned configuration in a fresh cache and tunes (its time is
reported apart); the timed rounds then run, in turn: the MONAI script, `tpem-seg run` (no flags:
the tuned default), `tpem-seg run --backend onnxruntime --no-tune` (the fixed default before
tuning) and `tpem-seg run --backend torch --precision bf16`. Medians over the rounds. On a
machine shared with other work the timings are noisy: the load average is recorded per run.

    python benchmarks/cli_vs_monai.py STACK.tif OUT.json [--model vessels-2p] [--rounds 3]
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
import tifffile

HERE = Path(__file__).resolve().parent


def timed(argv: list[str], env: dict) -> tuple[float, list[float]]:
    load = list(os.getloadavg())
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started, load


OUTPUTS = {"tpem-seg run": "default.tif", "tpem-seg run --backend onnxruntime --no-tune": "ort.tif",
           "tpem-seg run --backend torch --precision bf16": "bf16.tif"}


def summarise(work: Path, times: dict, loads: dict) -> list[dict]:
    """Per command: median wall, samples, load, ratio to the MONAI script, labels equal to its labels."""
    reference = tifffile.imread(work / "monai.tif")
    agreement = {k: float(np.mean(tifffile.imread(work / f) == reference)) for k, f in OUTPUTS.items()}
    monai = statistics.median(times["monai script"])
    return [{"command": k, "median_s": statistics.median(v), "samples_s": v, "load_1min": [x[0] for x in loads[k]],
             "vs_monai": monai / statistics.median(v), "labels_equal_to_monai": agreement.get(k)}
            for k, v in times.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stack", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="vessels-2p")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from tpem_seg.models import open_package

    package = open_package(args.model)
    work = Path(tempfile.mkdtemp(prefix="cli-vs-monai-"))
    env = {**os.environ, "TPEM_SEG_CACHE": str(work / "cache")}
    env.pop("TPEM_SEG_NO_TUNE", None)
    py = sys.executable
    tpem = [py, "-m", "tpem_seg.cli", "run", str(args.stack), "--model", args.model, "--no-progress", "-o"]
    commands = {
        "monai script": [py, str(HERE / "monai_script.py"), str(package.path), str(args.stack), str(work / "monai.tif")],
        "tpem-seg run": tpem + [str(work / OUTPUTS["tpem-seg run"])],
        "tpem-seg run --backend onnxruntime --no-tune": tpem + [str(work / OUTPUTS[
            "tpem-seg run --backend onnxruntime --no-tune"]), "--backend", "onnxruntime", "--no-tune"],
        "tpem-seg run --backend torch --precision bf16": tpem + [str(work / OUTPUTS[
            "tpem-seg run --backend torch --precision bf16"]), "--backend", "torch", "--precision", "bf16"],
    }
    first, first_load = timed(commands["tpem-seg run"], env)
    tuned = json.loads(next((work / "cache" / "tune").glob("*.json")).read_text())
    times: dict[str, list[float]] = {k: [] for k in commands}
    loads: dict[str, list[list[float]]] = {k: [] for k in commands}
    for round_ in range(args.rounds):
        for name, command in commands.items():
            seconds, load = timed(command, env)
            times[name].append(seconds)
            loads[name].append(load)
            print(f"round {round_ + 1}: {name}: {seconds:.2f} s (load {load[0]:.1f})", file=sys.stderr, flush=True)
        # Written after every round: a long run on a busy machine keeps what it measured.
        rows = summarise(work, times, loads)
        result = {"command": "python benchmarks/cli_vs_monai.py " + shlex.join(sys.argv[1:] if argv is None else argv),
                  "stack": str(args.stack), "model": args.model, "rounds_done": round_ + 1, "cpu": tuned["key"]["cpu"],
                  "cores": tuned["key"]["cores"], "first_run_with_tuning_s": first,
                  "first_run_load_1min": first_load[0], "tuned": tuned["spec"], "tuning_s": tuned["seconds"],
                  "tuning_trials": tuned["trials"], "commands": {k: shlex.join(v) for k, v in commands.items()},
                  "rows": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        agree = "ref" if r["labels_equal_to_monai"] is None else f"{r['labels_equal_to_monai']:.4%}"
        print(f"| `{r['command']}` | {r['median_s']:.1f} | {r['vs_monai']:.2f}x | {agree} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
