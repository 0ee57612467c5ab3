"""Where a `tpem-seg run` spends its time, stage by stage: read, normalise, batch, network, blend, write.

Runs the CLI in this process with timers around the functions each stage calls (reading and
normalising run in the prefetch thread, writing in the writer thread, so the stages overlap and
their sum can exceed the wall time); start-up (imports, opening the package, tuning) is the wall
time before the first tile. Writes JSON and prints one markdown row.

    python benchmarks/profile_stages.py OUT.json -- run STACK.tif -o /tmp/labels.tif --model vessels-2p --no-progress
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections import defaultdict

STAGES = ("read", "normalise", "batch", "network", "blend", "write")


class Clock:
    """Seconds per stage, summed over all threads; nested timers count only in the outermost stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.first_tile: float | None = None
        self._local = threading.local()

    def wrap(self, stage: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if getattr(self._local, "inside", False):
                return fn(*args, **kwargs)
            self._local.inside = True
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started
                self.calls[stage] += 1
                self._local.inside = False
        return timed


def install(clock: Clock) -> None:
    from tpem_seg.io.volume import Volume
    from tpem_seg.runtime import engine, outputs, segmenter, stitch
    from tpem_seg.runtime import pipeline
    from tpem_seg.runtime.backends.base import Backend
    from tpem_seg.runtime.normalize import Normalizer

    Volume.read_czyx = clock.wrap("read", Volume.read_czyx)
    Normalizer.__call__ = clock.wrap("normalise", Normalizer.__call__)
    infer = Backend.infer

    def network(self, batch):
        if clock.first_tile is None:
            clock.first_tile = time.perf_counter()
        return infer(self, batch)

    Backend.infer = clock.wrap("network", network)
    for name in ("add", "advance_raw"):
        setattr(stitch.Stitcher, name, clock.wrap("blend", getattr(stitch.Stitcher, name)))
    outputs.OutputHead.from_sums = clock.wrap("blend", outputs.OutputHead.from_sums)
    real_iter = pipeline.iter_tiles

    def iter_tiles(*args, **kwargs):
        # Batch = the producer's time per item, less the reading and normalising inside it.
        source = real_iter(*args, **kwargs)
        while True:
            before = clock.seconds["read"] + clock.seconds["normalise"]
            started = time.perf_counter()
            try:
                item = next(source)
            except StopIteration:
                return
            clock.seconds["batch"] += time.perf_counter() - started - (
                clock.seconds["read"] + clock.seconds["normalise"] - before)
            yield item

    engine.iter_tiles = iter_tiles
    real_open = segmenter.open_writer

    class TimedWriter:
        """The writer as a context manager, its ``write`` timed."""

        def __init__(self, writer):
            self._writer = writer

        def __enter__(self):
            inner = self._writer.__enter__()
            inner.write = clock.wrap("write", inner.write)
            return inner

        def __exit__(self, *exc):
            return self._writer.__exit__(*exc)

    def open_writer(*args, **kwargs):
        return TimedWriter(real_open(*args, **kwargs))

    segmenter.open_writer = open_writer


def main(argv: list[str]) -> int:
    out, cli_args = argv[0], argv[argv.index("--") + 1:]
    started = time.perf_counter()
    clock = Clock()
    from tpem_seg.cli import main as cli_main

    install(clock)
    try:
        cli_main(cli_args)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    wall = time.perf_counter() - started
    result = {"command": "python benchmarks/profile_stages.py " + " ".join(argv), "wall_s": wall,
              "startup_s": (clock.first_tile or started) - started,
              "stages_s": {s: round(clock.seconds[s], 3) for s in STAGES}, "calls": dict(clock.calls)}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"| {wall:.2f} | {result['startup_s']:.2f} | " + " | ".join(f"{clock.seconds[s]:.2f}" for s in STAGES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
