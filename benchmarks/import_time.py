"""How long ``import tpem_seg.cli`` takes and which heavy libraries it loads, for one or more source trees.

    python benchmarks/import_time.py --rounds 9 . /path/to/other/checkout

The trees are measured interleaved (one run of each per round) so that a busy machine slows them
alike; each run is a fresh ``python -X importtime -c "import tpem_seg.cli"`` with the tree first on
``PYTHONPATH``. Prints, per tree, the cumulative milliseconds of the ``tpem_seg.cli`` line per run,
their median, and the heavy libraries found in ``sys.modules``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HEAVY = ("scipy", "torch", "onnxruntime", "monai", "onnx", "numpy", "tifffile")


def cli_import_ms(tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import tpem_seg.cli"], cwd=tree, env=env,
                            capture_output=True, text=True, check=True)
    line = next(l for l in result.stderr.splitlines() if l.rstrip().endswith("| tpem_seg.cli"))
    return int(line.split("|")[1]) / 1000


def heavy_modules(tree: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = f"import sys, tpem_seg.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees holding tpem_seg/")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in args.trees]
    times: dict[Path, list[float]] = {t: [] for t in trees}
    for _ in range(args.rounds):
        for tree in trees:
            times[tree].append(cli_import_ms(tree))
    for tree in trees:
        runs = " ".join(f"{t:.0f}" for t in times[tree])
        print(f"{tree}: {runs} ms; median {statistics.median(times[tree]):.0f} ms; "
              f"heavy modules: {', '.join(heavy_modules(tree)) or 'none'}")


if __name__ == "__main__":
    main()
