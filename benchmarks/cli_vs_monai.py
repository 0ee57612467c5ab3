"""Whole processes, as users run them: `tpem-seg run` against the 20-line MONAI script
(benchmarks/monai_script.py), alternated, on one stack; wall time per process and label agreement.

The first `tpem-seg run` finds no tuned configuration in a fresh cache and tunes (its time is
reported apart); the timed rounds then run, in turn: the MONAI script, `tpem-seg run` (no flags:
the tuned default), `tpem-seg run --backend onnxruntime --no-tune` (the fixed default before
tuning), `tpem-seg run --backend torch --precision bf16` and `tpem-seg run --backend openvino
--precision bf16` (where OpenVINO is installed). Medians over the rounds. On a machine shared with
other work the timings are noisy: the load average and each process's CPU seconds (user + system)
are recorded per run.

    python benchmarks/cli_vs_monai.py STACK.tif OUT.json [--model vessels-2p] [--rounds 3]

writes OUT.json (every sample) and OUT.md (the table) beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
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


def timed(argv: list[str], env: dict) -> tuple[float, list[float], float]:
    """Wall seconds, the load average before, and the CPU seconds (user + system) of the process."""
    load = list(os.getloadavg())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, load, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


#: The tpem-seg commands timed: name -> (output file, flags after the output).
RUNS = {"tpem-seg run": ("default.tif", []),
        "tpem-seg run --backend onnxruntime --no-tune": ("ort.tif", ["--backend", "onnxruntime", "--no-tune"]),
        "tpem-seg run --backend torch --precision bf16": ("bf16.tif", ["--backend", "torch", "--precision", "bf16"]),
        "tpem-seg run --backend openvino --precision bf16": ("openvino.tif", ["--backend", "openvino",
                                                                              "--precision", "bf16"])}


def summarise(work: Path, times: dict, loads: dict, cpu: dict) -> list[dict]:
    """Per command: median wall, samples, load, CPU seconds, ratio to the MONAI script, labels equal to its labels."""
    reference = tifffile.imread(work / "monai.tif")
    agreement = {k: float(np.mean(tifffile.imread(work / RUNS[k][0]) == reference)) for k in times if k in RUNS}
    monai = statistics.median(times["monai script"])
    return [{"command": k, "median_s": statistics.median(v), "samples_s": v, "load_1min": [x[0] for x in loads[k]],
             "cpu_s": cpu[k], "median_cpu_s": statistics.median(cpu[k]), "vs_monai": monai / statistics.median(v),
             "labels_equal_to_monai": agreement.get(k)}
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
    commands = {"monai script": [py, str(HERE / "monai_script.py"), str(package.path), str(args.stack),
                                 str(work / "monai.tif")]}
    for name, (out, flags) in RUNS.items():
        if "openvino" in flags and importlib.util.find_spec("openvino") is None:
            print(f"skipped ({name}): OpenVINO is not installed", file=sys.stderr)
            continue
        commands[name] = tpem + [str(work / out), *flags]
    first, first_load, _ = timed(commands["tpem-seg run"], env)
    tuned = json.loads(next((work / "cache" / "tune").glob("*.json")).read_text())
    times: dict[str, list[float]] = {k: [] for k in commands}
    loads: dict[str, list[list[float]]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    for round_ in range(args.rounds):
        for name, command in commands.items():
            seconds, load, cpu_s = timed(command, env)
            times[name].append(seconds)
            loads[name].append(load)
            cpu[name].append(cpu_s)
            print(f"round {round_ + 1}: {name}: {seconds:.2f} s, CPU {cpu_s:.2f} s (load {load[0]:.1f})",
                  file=sys.stderr, flush=True)
        # Written after every round: a long run on a busy machine keeps what it measured.
        rows = summarise(work, times, loads, cpu)
        result = {"command": "python benchmarks/cli_vs_monai.py " + shlex.join(sys.argv[1:] if argv is None else argv),
                  "stack": str(args.stack), "model": args.model, "rounds_done": round_ + 1, "cpu": tuned["key"]["cpu"],
                  "cores": tuned["key"]["cores"], "first_run_with_tuning_s": first,
                  "first_run_load_1min": first_load[0], "tuned": tuned["spec"], "tuning_s": tuned["seconds"],
                  "tuning_trials": tuned["trials"], "commands": {k: shlex.join(v) for k, v in commands.items()},
                  "rows": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    """The result as a table, with the command that made it and the tuned choice."""
    spec = result["tuned"]
    options = ", ".join(f"{k}={v}" for k, v in sorted(spec["options"].items()))
    lines = [f"Command: `{result['command']}`", "",
             f"Machine: {result['cpu']}, {result['cores']} cores. Stack `{result['stack']}`, model `{result['model']}`, "
             f"{result['rounds_done']} alternated round(s).", "",
             f"First `tpem-seg run` in a fresh cache: {result['first_run_with_tuning_s']:.1f} s, of which tuning "
             f"{result['tuning_s']:.1f} s (load {result['first_run_load_1min']:.1f}); chosen: {spec['name']} "
             f"{spec['precision']} ({options}).", "",
             "| command | wall s, median | CPU s, median | vs MONAI script (wall) | labels equal to the MONAI script's "
             "| load (1 min) |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        agree = "ref" if r["labels_equal_to_monai"] is None else f"{r['labels_equal_to_monai']:.4%}"
        loads = "-".join(f"{x:.1f}" for x in (min(r["load_1min"]), max(r["load_1min"])))
        lines.append(f"| `{r['command']}` | {r['median_s']:.1f} | {r['median_cpu_s']:.1f} | {r['vs_monai']:.2f}x "
                     f"| {agree} | {loads} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
