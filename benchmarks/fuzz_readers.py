"""Fuzz the readers and the package opener with byte-mutated inputs, for a fixed time per target.

Each target starts from a small valid seed (a plain, ImageJ, OME, zlib, LZW or BigTIFF file,
an ``.npy``, the metadata JSON of a zarr array or an OME-Zarr image, a package manifest) and
mutates its bytes (flips, overwrites with boundary values, inserts, deletes, truncation,
splices of the seed into itself). Every mutant is opened in a worker process under an
address-space limit (``RLIMIT_AS``) with a per-input timeout; reading it may succeed or raise
the project's own errors (``InputError``, ``PackageError``), nothing else. A failure is any
other exception, a worker killed by a signal, a hang past the timeout, or a MemoryError (an
allocation past the bound); failures are grouped by kind and place, and the first mutant of
each is saved under ``--crashers``.

    PYTHONPATH=. python benchmarks/fuzz_readers.py --seconds 60 --out benchmarks/results/fuzz.md

Not part of the test suite: the saved crashers become regression cases in tests/io/fuzz_cases/.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Values that break parsers: zero, one, sign bits, all ones, around powers of two.
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


# -- seeds ---------------------------------------------------------------------------------------------


def _tiff_bytes(**kwargs) -> bytes:
    import tifffile

    data = kwargs.pop("data", None)
    if data is None:
        data = (np.arange(3 * 16 * 16) % 251).astype(np.uint8).reshape(3, 16, 16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, **kwargs)
    return buffer.getvalue()


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, (np.arange(3 * 8 * 8) % 97).astype(np.uint16).reshape(3, 8, 8))
    return buffer.getvalue()


def seeds() -> dict[str, tuple[str, bytes]]:
    """Target name -> (what the bytes are, seed bytes)."""
    czyx = (np.arange(2 * 3 * 16 * 16) % 200).astype(np.uint8).reshape(2, 3, 16, 16)
    return {
        "tiff-plain": ("file.tif", _tiff_bytes(metadata=None, photometric="minisblack")),
        "tiff-imagej": ("file.tif", _tiff_bytes(data=czyx.transpose(1, 0, 2, 3).copy(), imagej=True,
                                                metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"},
                                                resolution=(1.0, 1.0))),
        "tiff-ome": ("file.ome.tif", _tiff_bytes(data=czyx, ome=True, metadata={
            "axes": "CZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0,
            "Channel": {"Name": ["a", "b"]}})),
        "tiff-zlib": ("file.tif", _tiff_bytes(compression="zlib", metadata=None, photometric="minisblack")),
        "tiff-lzw-tiled": ("file.tif", _tiff_bytes(data=(np.arange(2 * 32 * 32) % 13).astype(np.uint16)
                                                   .reshape(2, 32, 32), compression="lzw", tile=(16, 16),
                                                   metadata=None, photometric="minisblack")),
        "tiff-bigtiff": ("file.btf", _tiff_bytes(bigtiff=True, metadata=None, photometric="minisblack")),
        "npy": ("file.npy", _npy_bytes()),
        "zarr-array-meta": ("array.zarr/.zarray", b""),  # filled from a written store in the worker's seed dir
        "ome-zarr-attrs": ("ome.zarr/.zattrs", b""),
        "package-manifest": ("package/manifest.json", b""),
        # The same, re-signed after mutation when it still parses: reaches past the digest check.
        "package-manifest-resigned": ("package/manifest.json", b""),
    }


def make_store_seeds(folder: Path) -> dict[str, bytes]:
    """Write the zarr, OME-Zarr and package seeds under ``folder``; their metadata bytes by target."""
    import zarr

    from tpem_seg.io import write_volume
    from tpem_seg.models import Manifest, get_config, write_package

    array = zarr.open_array(str(folder / "array.zarr"), mode="w", shape=(3, 16, 16), chunks=(1, 16, 16), dtype="u1",
                            zarr_format=2)
    array[:] = (np.arange(3 * 16 * 16) % 200).astype(np.uint8).reshape(3, 16, 16)
    write_volume(folder / "ome.zarr", np.ones((3, 16, 16), np.uint8), "ZYX", spacing=(2.0, 0.5, 0.5))
    manifest = Manifest(name="fuzz", config=get_config("unetr-test", in_channels=1, out_channels=2),
                        channels=["c"], classes=["bg", "fg"])
    write_package(folder / "package", manifest, {"model.onnx": b"placeholder"})
    return {"zarr-array-meta": (folder / "array.zarr" / ".zarray").read_bytes(),
            "ome-zarr-attrs": (folder / "ome.zarr" / ".zattrs").read_bytes(),
            "package-manifest": (folder / "package" / "manifest.json").read_bytes(),
            "package-manifest-resigned": (folder / "package" / "manifest.json").read_bytes()}


def resign(data: bytes) -> bytes:
    """``data`` with its manifest digest recomputed, when it is a JSON object; else unchanged."""
    from tpem_seg.models.package import DIGEST_KEY, manifest_digest

    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(manifest, dict):
        return data
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    return json.dumps(manifest).encode()


# -- mutation ------------------------------------------------------------------------------------------


#: JSON values that break metadata readers: wrong types, huge, negative, non-finite, path escapes.
JSON_VALUES = [None, True, 0, -1, 1, 2**31, 2**63, 10**30, -10**30, 1e308, 0.0, -0.5, "", "..", "../x", "/etc",
               "x" * 300, [], [0], [-1, -1, -1], [10**9] * 3, [[[]]], {}, {"a": None}, "NaN", "\u0000"]


def _paths(node, prefix=()):
    """Every (path, value) inside a parsed JSON document."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def mutate_json(data: bytes, rng: random.Random) -> bytes:
    """Replace, delete or duplicate one to four values of a JSON document (structure-aware)."""
    doc = json.loads(data)
    for _ in range(rng.randint(1, 4)):
        paths = [p for p, _ in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = rng.randrange(4)
        if op == 0 and isinstance(parent, dict):
            del parent[key]
        elif op == 1 and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = parent[key] * rng.choice([-1, 0, 2, 10**6, 10**18])
        elif op == 2 and isinstance(parent[key], list) and parent[key]:
            grown = parent[key] + copy.deepcopy(parent[key][:1])
            parent[key] = grown if rng.random() < 0.5 else parent[key][1:]
        else:
            parent[key] = copy.deepcopy(rng.choice(JSON_VALUES))  # a copy: never the table itself
    return json.dumps(doc).encode()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One mutant: structure-aware for JSON half the time, else one to eight byte-level havoc steps."""
    if data[:1] == b"{" and rng.random() < 0.5:
        return mutate_json(data, rng)
    return mutate_bytes(data, rng)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to eight havoc steps over ``data`` (AFL-style); in-place changes twice as often as shifts,
    so offsets inside a file often stay valid and the mutant reaches past the header checks."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buf:
            buf = bytearray(rng.randbytes(rng.randint(1, 16)))
        op = rng.choice([0, 0, 1, 1, 2, 2, 2, 3, 4, 5, 6, 7])
        at = rng.randrange(len(buf))
        if op == 0:  # flip a bit
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 1:  # random byte
            buf[at] = rng.randrange(256)
        elif op == 2:  # interesting integer, little or big endian, 1/2/4/8 bytes
            width = rng.choice([1, 2, 4, 8])
            value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            chunk = value.to_bytes(width, rng.choice(["little", "big"]))
            buf[at:at + width] = chunk
        elif op == 3:  # delete a run
            del buf[at:at + rng.randint(1, 32)]
        elif op == 4:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 32))
        elif op == 5:  # truncate
            del buf[at:]
        elif op == 6:  # duplicate a run elsewhere
            length = rng.randint(1, 64)
            buf[rng.randrange(len(buf) + 1):0] = buf[at:at + length]
        else:  # ASCII digits (JSON numbers, OME attributes)
            buf[at:at + 1] = rng.choice([b"9" * rng.randint(1, 30), b"-1", b"0", b"1e999", b"null", b"[", b"{"])
    return bytes(buf)


# -- the worker ----------------------------------------------------------------------------------------


def _exercise(target: str, path: Path) -> None:
    """Open ``path`` as ``target`` does and read from it, as a run would."""
    if target.startswith("package-manifest"):
        from tpem_seg.models import open_package

        open_package(path.parent)
        return
    from tpem_seg.io import read_volume

    volume = read_volume(path.parent if target in ("zarr-array-meta", "ome-zarr-attrs") else path)
    z = volume.shape_zyx[0]
    volume.read_czyx(0, 1)
    if volume.data.nbytes <= 64 * 2**20:
        volume.read_czyx(0, z)
    volume.data.close()


def _where(err: BaseException) -> str:
    """Where an exception came from: the innermost frame (file:function)."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.name}"


def worker(conn, memory_bytes: int, workdir: str) -> None:
    """Serve mutants from ``conn``: ``(target, relpath, data)`` -> ``(outcome, detail)``."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import logging

    logging.disable(logging.CRITICAL)  # tifffile logs every oddity it meets
    import warnings

    warnings.simplefilter("ignore")
    from tpem_seg.errors import InputError, PackageError

    base = Path(workdir)
    while True:
        job = conn.recv()
        if job is None:
            return
        target, rel, data = job
        case = base / "case"
        if case.exists():
            shutil.rmtree(case)
        shutil.copytree(base / "seeds", case, symlinks=True)
        path = case / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        try:
            _exercise(target, path)
            conn.send(("ok", "", ""))
        except (InputError, PackageError):
            conn.send(("refused", "", ""))
        except MemoryError as err:
            conn.send(("fail", f"MemoryError at {_where(err)}", ""))
        except Exception as err:  # the finding: report, keep fuzzing
            conn.send(("fail", f"{type(err).__name__} at {_where(err)}", str(err)[:160]))


@dataclass
class TargetResult:
    name: str
    executions: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # failure -> the message of its first mutant
    seconds: float = 0.0


class Runner:
    """A worker process under RLIMIT_AS, restarted when a mutant kills or hangs it."""

    def __init__(self, memory_bytes: int, workdir: Path) -> None:
        self.memory_bytes = memory_bytes
        self.workdir = workdir
        self.ctx = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=worker, args=(child, self.memory_bytes, str(self.workdir)), daemon=True)
        self.proc.start()

    def run(self, target: str, rel: str, data: bytes, timeout: float) -> tuple[str, str, str]:
        """``(outcome, kind and place of a failure, its message)`` for one mutant."""
        self.conn.send((target, rel, data))
        if self.conn.poll(timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        else:
            self.proc.kill()
            self.proc.join()
            self._start()
            return "fail", f"hang (> {timeout:g} s)", ""
        self.proc.join()
        code = self.proc.exitcode
        self._start()
        return "fail", f"worker died (exit {code})", ""

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


def fuzz(seconds: float, memory_bytes: int, timeout: float, crashers: Path, seed: int,
         only: list[str] | None) -> list[TargetResult]:
    rng = random.Random(seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="tpem-fuzz-") as tmp:
        workdir = Path(tmp)
        (workdir / "seeds").mkdir()
        store_seeds = make_store_seeds(workdir / "seeds")
        runner = Runner(memory_bytes, workdir)
        try:
            for name, (rel, data) in seeds().items():
                if only and name not in only:
                    continue
                data = store_seeds.get(name, data)
                result = TargetResult(name)
                outcome, detail, _ = runner.run(name, rel, data, timeout * 10)  # the seed itself must read
                if outcome != "ok":
                    raise RuntimeError(f"seed of {name} does not read: {outcome} {detail}")
                started = time.monotonic()
                while time.monotonic() - started < seconds:
                    mutant = mutate(data, rng)
                    if name == "package-manifest-resigned":
                        mutant = resign(mutant)
                    outcome, detail, message = runner.run(name, rel, mutant, timeout)
                    result.executions += 1
                    result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
                    if outcome == "fail":
                        if detail not in result.failures:
                            crashers.mkdir(parents=True, exist_ok=True)
                            digest = hashlib.sha256(mutant).hexdigest()[:8]
                            (crashers / f"{name}-{digest}-{Path(rel).name}").write_bytes(mutant)
                            result.examples[detail] = message
                            print(f"{name}: new failure {detail}: {message}", file=sys.stderr)
                        result.failures[detail] = result.failures.get(detail, 0) + 1
                result.seconds = time.monotonic() - started
                print(f"{name}: {result.executions} executions, {result.outcomes}", file=sys.stderr)
                results.append(result)
        finally:
            runner.close()
    return results


def markdown(results: list[TargetResult], command: str, memory_bytes: int, timeout: float) -> str:
    lines = ["# Fuzzing the readers and the package opener", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.processor() or 'cpu'}), "
             f"Python {platform.python_version()}; each mutant in a worker under RLIMIT_AS = "
             f"{memory_bytes / 2**30:.1f} GiB, timeout {timeout:g} s.", "",
             "| target | executions | exec/s | read fine | refused (project error) | failures | distinct |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.name} | {r.executions} | {r.executions / max(r.seconds, 1e-9):.0f} | "
                     f"{r.outcomes.get('ok', 0)} | {r.outcomes.get('refused', 0)} | {r.outcomes.get('fail', 0)} | "
                     f"{len(r.failures)} |")
    found = [(r.name, d, n, r.examples.get(d, "")) for r in results for d, n in r.failures.items()]
    lines += ["", "## Distinct failures", ""]
    lines += [f"- {name}: {detail} ({n}x): {example}" for name, detail, n, example in found] or ["None in this run."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="fuzzing time per target")
    parser.add_argument("--memory-gib", type=float, default=2.0, help="address-space limit of the worker")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one mutant may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=None, help="comma-separated subset of the targets")
    parser.add_argument("--crashers", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_crashers")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    memory = int(args.memory_gib * 2**30)
    only = args.targets.split(",") if args.targets else None
    results = fuzz(args.seconds, memory, args.timeout, args.crashers, args.seed, only)
    command = "PYTHONPATH=. python benchmarks/fuzz_readers.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    report = markdown(results, command, memory, args.timeout)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    print(report)
    if any(r.failures for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
