"""A tuned default: the fastest faithful configuration of a package on this machine, found once.

No default fixed in code is the fastest on every CPU (AVX-512 BF16 on some, AMX on others,
two cores or sixty-four), so the first run of a package on a machine times the configurations
that are installed here on a few real tiles of its input, keeps the faithful ones and caches
the fastest, as TensorRT's timing cache or cuDNN's benchmark mode do:

- candidates (:func:`candidates`): ONNX Runtime fp32 (intra-op threads, spinning), PyTorch fp32,
  OpenVINO fp32, and PyTorch and OpenVINO bf16 where the CPU has native bf16 (those that are
  installed); each at a few batch sizes, timed on the same loaded backend (OpenVINO, compiled
  for one batch size, gets a row per size), one pass over the tiles per batch size after a
  warm-up call;
- faithful: against the package's fp32 reference (PyTorch with its weights, else ONNX Runtime)
  on the same tiles, labels equal on at least :data:`MIN_LABEL_AGREEMENT` of the voxels and
  probabilities within the package's parity tolerance (:func:`tolerance`);
- the cache: one JSON per key (:class:`TuneKey`: package sha256, device, CPU model, flags and
  cores, library versions) under ``<cache root>/tune``; a changed key tunes again, the same key
  never does.

Every candidate is timed at its first batch size; further batch sizes only within ``budget_s``
seconds; tuning says what it cost. Timings taken on a loaded machine bias the choice (it is
cached per machine): ``tpem-seg tune MODEL`` on an idle one makes it again. Only the
CPU is tuned; on a GPU ``auto`` keeps its fixed order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from tpem_seg.io import Volume
from tpem_seg.models.package import ModelPackage
from tpem_seg.runtime.backends import Backend, BackendSpec, create_backend, unavailable
from tpem_seg.runtime.compare import Agreement, compare_logits
from tpem_seg.runtime.devices import cpu_count, cpu_flags, cpu_model, cpu_supports_bf16, library_versions
from tpem_seg.runtime.normalize import fit_normalizer
from tpem_seg.runtime.pipeline import make_plan
from tpem_seg.util.atomic import write_text
from tpem_seg.util.cache import cache_root

log = logging.getLogger(__name__)

#: A candidate's labels must equal the reference's on at least this fraction of the tuning voxels.
MIN_LABEL_AGREEMENT = 0.999
#: fp32 probabilities: the export's parity tolerance, where the package does not record its own.
FP32_TOLERANCE = 1e-4
#: Reduced precision (bf16): the tolerance the export applies to reduced-precision (fp16) engines.
REDUCED_TOLERANCE = 5e-2
#: Tiles timed per candidate (every batch size divides it) and seconds after which no new one starts.
TUNE_TILES = 8
DEFAULT_BUDGET_S = 8.0
FORMAT = "tpem-seg-tune/1"
#: Set to 1 to never tune (as ``--no-tune`` on every run): for CI and batch clusters.
NO_TUNE_ENV = "TPEM_SEG_NO_TUNE"


@dataclass(frozen=True)
class TuneKey:
    """What a tuned choice depends on; any change tunes again.

    package_sha256: of its manifest (which holds every file's sha256); cpu: the model name;
    cpu_flags_sha256: of the sorted feature flags; cores: the cores this process may use;
    versions: (distribution, version) of the libraries a backend runs on.
    """

    package_sha256: str
    device: str
    cpu: str
    cpu_flags_sha256: str
    cores: int
    versions: tuple[tuple[str, str | None], ...]

    @classmethod
    def here(cls, package: ModelPackage, device: str = "cpu") -> "TuneKey":
        flags = hashlib.sha256(" ".join(cpu_flags()).encode()).hexdigest()
        return cls(package_sha256(package), device, cpu_model(), flags, cpu_count(),
                   tuple(sorted(library_versions().items())))

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Trial:
    """One candidate at one batch size: seconds per tile (None: not timed) and its faithfulness."""

    spec: dict
    batch_size: int
    seconds_per_tile: float | None = None
    voxel_agreement: float | None = None
    max_abs_prob_diff: float | None = None
    faithful: bool | None = None
    reason: str | None = None


@dataclass
class TuneResult:
    """The winner (a spec carrying its batch size), every trial, and what tuning cost."""

    key: TuneKey
    spec: BackendSpec
    package: str
    tuned_at: str
    seconds: float
    tiles: int
    reference: str
    trials: list[Trial] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "key": asdict(self.key), "spec": self.spec.to_dict(), "package": self.package,
                "tuned_at": self.tuned_at, "seconds": self.seconds, "tiles": self.tiles,
                "reference": self.reference, "trials": [asdict(t) for t in self.trials]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TuneResult":
        key = d["key"]
        key = TuneKey(**{**key, "versions": tuple(tuple(v) for v in key["versions"])})
        return cls(key, BackendSpec.from_dict(d["spec"]), d["package"], d["tuned_at"], d["seconds"], d["tiles"],
                   d["reference"], [Trial(**t) for t in d["trials"]])

    def line(self) -> str:
        best = min((t.seconds_per_tile for t in self.trials if t.faithful and t.seconds_per_tile), default=None)
        per_tile = f", {1000 * best:.1f} ms per tile" if best else ""
        return f"{self.package}: {self.spec.line()}{per_tile} (tuned {self.tuned_at} in {self.seconds:.1f} s)"


def package_sha256(package: ModelPackage) -> str:
    """sha256 of the package's manifest, which records the sha256 of every file in it."""
    return hashlib.sha256((Path(package.path) / "manifest.json").read_bytes()).hexdigest()


def cache_dir() -> Path:
    return cache_root() / "tune"


def cache_path(key: TuneKey) -> Path:
    return cache_dir() / f"{key.digest}.json"


def cached(package: ModelPackage, device: str = "cpu") -> TuneResult | None:
    """The tuned choice for ``package`` on this machine, if one was made under the same key."""
    key = TuneKey.here(package, device)
    path = cache_path(key)
    if not path.is_file():
        return None
    result = _read(path)
    return result if result is not None and result.key == key else None


def cached_here() -> list[TuneResult]:
    """Every tuned choice cached for this CPU (any package), newest first: what ``tpem-seg info`` shows."""
    folder = cache_dir()
    if not folder.is_dir():
        return []
    results = [r for r in map(_read, sorted(folder.glob("*.json"))) if r is not None and r.key.cpu == cpu_model()]
    return sorted(results, key=lambda r: r.tuned_at, reverse=True)


def _read(path: Path) -> TuneResult | None:
    """The cached result in ``path``; None (with a warning: it will be tuned again) if unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, not {FORMAT}")
        return TuneResult.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("ignoring the unreadable tuning cache %s (%s): it is tuned again", path, err)
        return None


def tolerance(package: ModelPackage, precision: str) -> float:
    """Max abs probability difference a candidate at ``precision`` may show against the reference:
    for fp32 the tolerance the package's export parity was held to (its manifest), else
    :data:`FP32_TOLERANCE`; for reduced precision :data:`REDUCED_TOLERANCE`."""
    if precision != "fp32":
        return REDUCED_TOLERANCE
    recorded = package.manifest.parity.get("onnxruntime_vs_torch", {}).get("tolerance")
    return float(recorded) if recorded else FP32_TOLERANCE


def sample_tiles(volume: Volume, package: ModelPackage, n: int = TUNE_TILES, overlap: float = 0.25,
                 channels: Sequence[int] | None = None) -> np.ndarray:
    """``n`` tiles ``(n, C, D, H, W)`` float32 the run would feed the network: from the middle row of
    the tile plan, spread over it, normalised over the whole volume (repeated if the row is short)."""
    manifest = package.manifest
    plan = make_plan(volume.shape_zyx, manifest.tile, overlap)
    normalizer = fit_normalizer(volume, manifest.normalization, channels)
    slab = plan.read_slab(volume, plan.z_starts[len(plan.z_starts) // 2], normalizer, channels)
    _, h, w = plan.tile
    picks = np.linspace(0, len(plan.yx_origins) - 1, n).round().astype(int)
    return np.ascontiguousarray(np.stack([slab[:, :, y:y + h, x:x + w] for y, x in
                                          (plan.yx_origins[i] for i in picks)]), dtype=np.float32)


def candidates(package: ModelPackage, cores: int | None = None) -> list[tuple[BackendSpec, tuple[int, ...]]]:
    """(spec, batch sizes) to time on the CPU, the ones that can run here only; the first batch size of
    each is always timed (the fixed default first)."""
    cores = cores or cpu_count()
    rows = [(BackendSpec("onnxruntime", "cpu", "fp32", {"threads": cores}), (2, 1, 4)),
            (BackendSpec("onnxruntime", "cpu", "fp32", {"threads": cores, "spinning": False}), (2,))]
    if cores > 2:
        rows.append((BackendSpec("onnxruntime", "cpu", "fp32", {"threads": cores - 1}), (2,)))
    if cpu_supports_bf16():
        rows.append((BackendSpec("torch", "cpu", "bf16", {"threads": cores}), (8, 4)))
        # OpenVINO compiles one batch size per backend, so each size costs a row (a compile): one,
        # at 8 as for torch bf16 (2, 4, 8 and 16 were within the noise of the loaded machine:
        # benchmarks/results/openvino_tiles_loaded.md).
        rows.append((BackendSpec("openvino", "cpu", "bf16", {"threads": cores, "batch_size": 8}), (8,)))
    rows.append((BackendSpec("torch", "cpu", "fp32", {"threads": cores}), (2, 4)))
    rows.append((BackendSpec("openvino", "cpu", "fp32", {"threads": cores, "batch_size": 8}), (8,)))
    return [(spec, sizes) for spec, sizes in rows
            if unavailable(spec.name, spec.device, spec.precision, package, **spec.options) is None]


def reference_spec(package: ModelPackage) -> BackendSpec:
    """The package's fp32 reference: PyTorch with its weights where it can run, else ONNX Runtime."""
    torch_ref = BackendSpec("torch", "cpu", "fp32")
    return torch_ref if unavailable("torch", "cpu", "fp32", package) is None else BackendSpec("onnxruntime", "cpu")


def time_batches(backend: Backend, tiles: np.ndarray, batch_size: int, repeats: int = 1) -> tuple[float, np.ndarray]:
    """Best seconds per tile over ``repeats`` passes of ``tiles`` in batches, and the logits of the last."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        logits = np.concatenate([backend.infer(tiles[i:i + batch_size]) for i in range(0, len(tiles), batch_size)])
        best = min(best, (time.perf_counter() - started) / len(tiles))
    return best, logits


def tune(package: ModelPackage, tiles: np.ndarray, *, budget_s: float = DEFAULT_BUDGET_S,
         make_backend: Callable[[BackendSpec], Backend] | None = None,
         rows: list[tuple[BackendSpec, tuple[int, ...]]] | None = None) -> TuneResult:
    """Time ``rows`` (default :func:`candidates`) on ``tiles`` against the fp32 reference; the fastest
    faithful trial wins (the reference itself, at batch 2, when none is). Every row gets its first
    batch size timed; its further batch sizes only while ``budget_s`` lasts (or no trial is faithful
    yet). Writes the cache.

    ``make_backend``: builds a backend from a spec (default :func:`create_backend`; tests inject an
    unfaithful one)."""
    make_backend = make_backend or (lambda spec: create_backend(spec, package))
    rows = candidates(package) if rows is None else rows
    key = TuneKey.here(package, "cpu")
    started = time.perf_counter()
    log.info("tuning %s on this CPU: timing %d configurations on %d tiles", package.name, len(rows), len(tiles))
    ref_spec = reference_spec(package)
    manifest = package.manifest
    with _torch_threads_kept():
        with create_backend(ref_spec, package) as ref:
            reference = np.concatenate([ref.infer(tiles[i:i + 2]) for i in range(0, len(tiles), 2)])
        trials: list[Trial] = []
        spent = f"budget of {budget_s:.0f} s spent"
        for spec, sizes in rows:
            with make_backend(spec) as backend:
                backend.infer(tiles[:max(sizes)])  # warm-up: first-call allocations, kernel selection
                for i, b in enumerate(sizes):
                    if i > 0 and _over(started, budget_s, trials):
                        trials.append(Trial(spec.to_dict(), b, reason=spent))
                        continue
                    seconds, logits = time_batches(backend, tiles, b)
                    a = compare_logits(logits, reference, manifest.classes, manifest.activation)
                    trials.append(_trial(spec, b, seconds, a, tolerance(package, spec.precision)))
    faithful = [t for t in trials if t.faithful]
    if faithful:
        best = min(faithful, key=lambda t: t.seconds_per_tile)
        spec = BackendSpec.from_dict(best.spec).replace(options={"batch_size": best.batch_size})
    else:
        spec = ref_spec.replace(options={"batch_size": 2})
    result = TuneResult(key, spec, package.name, time.strftime("%Y-%m-%d %H:%M:%S %z"),
                        round(time.perf_counter() - started, 2), len(tiles), ref_spec.line(), trials)
    write_text(cache_path(key), json.dumps(result.to_dict(), indent=2))
    log.warning("first run of %s on this CPU: tuned in %.1f s, once (cached in %s; --no-tune skips): %s",
                package.name, result.seconds, cache_dir(), spec.line())
    return result


def backend_for_run(package: ModelPackage, src: str | os.PathLike, *, backend: str = "auto", device: str = "auto",
                    precision: str | None = None, tune_here: bool = True, axes: str | None = None,
                    channels: Sequence[int] | None = None, overlap: float = 0.25,
                    budget_s: float = DEFAULT_BUDGET_S, batch_size: int | None = None) -> Backend:
    """The (unloaded) backend ``tpem-seg run`` uses. Explicit flags win: a named backend, a named
    precision, a GPU, or ``tune_here`` False (``--no-tune``) give :func:`create_backend` of what was
    asked. Otherwise (``--backend auto`` on a CPU) the cached tuned choice for this package and
    machine, tuned now on ``src``'s tiles when there is none. ``batch_size`` (``--batch-size``)
    replaces the backend's own or the tuned one."""
    from tpem_seg.io import read_volume
    from tpem_seg.runtime.devices import resolve_device

    batch = {"batch_size": batch_size} if batch_size else {}
    explicit = backend != "auto" or precision is not None or not tune_here or os.environ.get(NO_TUNE_ENV) == "1"
    if explicit or resolve_device(device) != "cpu":
        return create_backend(backend, package, device=device, precision=precision or "fp32", **batch)
    hit = cached(package)
    if hit is not None:
        log.info("tuned configuration from the cache: %s", hit.spec.line())
        return create_backend(hit.spec.replace(options=batch), package)
    volume = read_volume(src, axes=axes)
    if (len(channels) if channels is not None else volume.n_channels) != package.manifest.config.in_channels:
        # Not this network's input: the Segmenter refuses it with the fix; nothing to tune on.
        return create_backend("auto", package, device="cpu", **batch)
    tiles = sample_tiles(volume, package, overlap=overlap, channels=channels)
    return create_backend(tune(package, tiles, budget_s=budget_s).spec.replace(options=batch), package)


def _over(started: float, budget_s: float, trials: list[Trial]) -> bool:
    """The budget is spent and a faithful trial exists to choose (so a slow machine still gets a choice)."""
    return time.perf_counter() - started > budget_s and any(t.faithful for t in trials)


def _trial(spec: BackendSpec, batch_size: int, seconds: float, a: Agreement, max_prob_diff: float) -> Trial:
    ok = a.within(MIN_LABEL_AGREEMENT, max_prob_diff)
    failed = ([f"labels agree on {a.voxel_agreement:.4%} (< {MIN_LABEL_AGREEMENT:.1%})"]
              if a.voxel_agreement < MIN_LABEL_AGREEMENT else [])
    failed += [f"max |dp| {a.max_abs_prob_diff:.2e} > {max_prob_diff:g}"] if a.max_abs_prob_diff > max_prob_diff else []
    reason = None if ok else " and ".join(failed)
    return Trial(spec.to_dict(), batch_size, seconds, a.voxel_agreement, a.max_abs_prob_diff, ok, reason)


class _torch_threads_kept:
    """Restores torch's process-wide thread count after candidates that set theirs (if torch is loaded)."""

    def __enter__(self):
        import sys

        torch = sys.modules.get("torch")
        self._threads = torch.get_num_threads() if torch is not None else None
        return self

    def __exit__(self, *exc) -> None:
        import sys

        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(self._threads or cpu_count())
