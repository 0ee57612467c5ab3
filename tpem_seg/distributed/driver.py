"""The driver of a distributed run: plan once, ship numbers, collect blocks, publish when complete.

1. Open the input and the package, fit the normaliser once (the Segmenter's own
   :meth:`~tpem_seg.runtime.segmenter.Segmenter.prepare`), choose the block and the chunks.
2. Create the output under its resumable partial name with the run manifest inside
   (:class:`~tpem_seg.distributed.store.BlockStore`), or, with ``resume``, find the stopped run's and
   refuse it (:class:`~tpem_seg.errors.ResumeError`) unless its manifest matches this run's.
3. Register the worker plugin (one backend per worker) and submit the blocks not yet done, one task
   each, with keys unique to the run, ``retries``, and ``GPU=1`` on CUDA.
4. Count them in as they complete (progress: blocks, voxels/s, ETA); publish the output under its
   final name when every block is done. A stopped or failed run keeps its partial output for
   ``resume``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from tpem_seg.distributed.cluster import GPU_RESOURCE, ClusterSpec, connect, require_dask
from tpem_seg.distributed.spec import BlockResult, RunSpec, manifest_differences
from tpem_seg.distributed.store import BlockStore, chunks_for
from tpem_seg.errors import OutputError, ResumeError
from tpem_seg.io import read_volume
from tpem_seg.models.package import ModelPackage, open_package, sha256_file
from tpem_seg.runtime import Segmenter
from tpem_seg.runtime.backends import BackendSpec, backend_class, resolve_spec
from tpem_seg.runtime.blocks import n_blocks
from tpem_seg.runtime.segmenter import RunSummary
from tpem_seg.util.interrupts import Terminated
from tpem_seg.util.partials import OutputLock

log = logging.getLogger(__name__)

#: Times a block is tried again after its task failed or its worker died.
RETRIES = 3


def run_distributed(src: str | os.PathLike, dst: str | os.PathLike, model, *, cluster: ClusterSpec | None = None,
                    client=None, backend: str = "auto", device: str = "auto", precision: str = "fp32",
                    backend_options: dict | None = None, output: str = "labels",
                    channels: Sequence[int] | None = None, resample: bool = True,
                    block: Sequence[int] | str = "auto", axes: str | None = None,
                    spacing: Sequence[float] | None = None, resume: bool = False, retries: int = RETRIES,
                    progress: bool = False, on_block: Callable[[BlockResult], None] | None = None,
                    pyramid: int = 1, **tile_options) -> RunSummary:
    """Segment ``src`` into the OME-Zarr ``dst`` on a dask cluster; bit-identical to a Segmenter run.

    Args:
        src: the input, on storage every worker sees (OME-Zarr/zarr read by region; TIFF by plane).
        dst: the output, ``.zarr``. It appears under this name only when every block is done.
        model: a bundled package name, a package path or an opened package (its folder is what
            the workers open).
        cluster: where workers come from (:func:`~tpem_seg.distributed.cluster.parse_cluster`), or
            ``client``: a connected ``distributed.Client`` to use as it is.
        backend, device, precision, backend_options: as for the Segmenter; each worker's threads
            option defaults to its dask threads.
        output, channels, resample, block, **tile_options: as for the Segmenter (block: the block
            core ``(z, y, x)``; ``auto``/``off``: the default block).
        resume: continue the stopped run of ``dst`` (its manifest must match this run's).
        retries: attempts per block beyond the first (a killed worker's blocks run again).
        on_block: called on the driver with each block's result as it completes.
        pyramid: OME-Zarr pyramid levels in all (level n halves y and x n times), for viewers; the
            levels above 0 are filled chunk by chunk by tasks once every block is done.

    Returns:
        The run's :class:`~tpem_seg.runtime.segmenter.RunSummary` (tiles summed over every block,
        earlier attempts of a resumed run included).

    Raises:
        OutputError: ``dst`` is not ``.zarr``, or a stopped run is there and ``resume`` is not set.
        ResumeError: ``resume`` with a stopped run whose model, settings or input differ.
    """
    if (cluster is None) == (client is None):
        raise TypeError("run_distributed takes a cluster spec or a client, exactly one")
    require_dask()
    started = time.perf_counter()
    dst = Path(dst).expanduser()
    if dst.suffix.lower() != ".zarr":
        raise OutputError(f"{dst}: a distributed run writes OME-Zarr, whose chunks workers fill in any order; "
                          "name the output .zarr")
    if int(pyramid) < 1:
        raise OutputError(f"{dst}: {pyramid} pyramid levels; give 1 (level 0 alone) or more")
    package = model if isinstance(model, ModelPackage) else open_package(model)
    requested = BackendSpec(backend, device, precision, backend_options or {})
    planning = _planning_backend(requested, package)
    segmenter = Segmenter(package, backend=planning, output=output, channels=channels, resample=resample,
                          block=block, **tile_options)
    volume = read_volume(src, axes=axes, spacing=spacing)
    inputs = segmenter.prepare(volume)
    spec, grid = _spec(segmenter, inputs, src, dst, requested, planning, axes, spacing, int(pyramid))
    manifest = spec.manifest(grid)
    with OutputLock(dst):
        store, done = _open_store(spec, manifest, dst, volume, segmenter, resume)
        spec = _with_store(spec, store)
        todo = [i for i in range(spec.n_blocks) if i not in done]
        log.info("%d blocks of %s (%d done before), block %s", spec.n_blocks, spec.shape, len(done), spec.block)
        results = {i: BlockResult.from_dict({**r, "already_done": True}) for i, r in done.items()}
        gpu = str(planning.device).startswith("cuda")
        if client is not None:
            _run(client, spec, todo, results, retries, gpu, progress, on_block, store)
        else:
            with connect(cluster, gpu) as own:
                _run(own, spec, todo, results, retries, gpu, progress, on_block, store)
        store.publish(dst)
    return _summary(spec, inputs, results, planning, time.perf_counter() - started, len(done))


def _planning_backend(requested: BackendSpec, package):
    """The backend the driver plans with (it is never loaded here): resolved where it can run here;
    a named backend on a device this machine lacks (a login node without GPUs) is taken as asked and
    checked by the workers."""
    from tpem_seg.errors import BackendUnavailable

    try:
        spec = resolve_spec(requested, package)
    except BackendUnavailable:
        if requested.name == "auto" or requested.device == "auto":
            raise
        log.info("%s cannot run on the driver; the workers check it", requested.line())
        spec = requested
    return backend_class(spec.name)(package, device=spec.device, precision=spec.precision, **spec.options)


def _spec(segmenter, inputs, src, dst, requested: BackendSpec, planning, axes, spacing,
          levels: int) -> tuple[RunSpec, dict]:
    settings = segmenter.settings
    tiles = {**dataclasses.asdict(settings.tiles), "batch_size": settings.tiles.batch_size or planning.default_batch_size()}
    shape = inputs.volume.shape_zyx
    block = segmenter.block_size(shape)
    backend = {**requested.to_dict(), "name": planning.name, "device": planning.device}
    norm = inputs.normalizer
    spec = RunSpec(run_id=secrets.token_hex(6), store="", source=str(Path(src).expanduser().absolute()),
                   axes=axes, spacing=tuple(spacing) if spacing is not None else inputs.volume.spacing,
                   package=str(segmenter.package.path), package_sha256=sha256_file(segmenter.package.path /
                                                                                   "manifest.json"),
                   backend=backend, output=settings.output, channels=settings.channels, resample=settings.resample,
                   tiles=tiles, low=tuple(float(v) for v in norm.low), high=tuple(float(v) for v in norm.high),
                   clip=bool(norm.clip), shape=shape, block=block, n_blocks=n_blocks(shape, block), levels=levels)
    grid = {"tile": inputs.grid.tile, "overlap": settings.tiles.overlap, "padded": inputs.grid.padded,
            "tiles": inputs.grid.n_tiles, "source_shape": inputs.grid.shape, "resampled": inputs.resampled}
    return spec, grid


def _output_layout(spec: RunSpec, volume, segmenter) -> dict:
    manifest = segmenter.package.manifest
    k = manifest.config.out_channels
    probabilities = spec.output == "probabilities"
    shape = (k, *spec.shape) if probabilities else spec.shape
    dtype = "float16" if probabilities else "uint8"
    return {"shape": shape, "dtype": dtype, "axes": "CZYX" if probabilities else "ZYX", "spacing": volume.spacing,
            "channel_names": manifest.classes if probabilities else None,
            "label_names": None if probabilities else manifest.classes,
            "chunks": chunks_for(shape, dtype, spec.block)}


def _open_store(spec: RunSpec, manifest: dict, dst: Path, volume, segmenter, resume: bool):
    """The store to fill and the blocks already done in it."""
    if spec.output == "logits":
        raise OutputError("logits output is for arrays (Segmenter.segment); write labels or probabilities")
    store = BlockStore.partial_of(dst)
    if store.exists():
        if not resume:
            raise OutputError(f"{dst} has a stopped run ({store.folder.name}, {len(store.done())} of "
                              f"{spec.n_blocks} blocks done); add --resume to continue it, or delete that "
                              "folder to start over")
        old = store.manifest()
        differences = manifest_differences(old, manifest)
        if differences:
            raise ResumeError(f"cannot resume {dst}: the stopped run differs in {', '.join(differences)}; "
                              "resume with its model and options, or delete "
                              f"{store.folder} to start over")
        return store, store.done()
    if resume:
        log.warning("%s has no stopped run to resume; starting it", dst)
    layout = _output_layout(spec, volume, segmenter)
    return BlockStore.create(dst, manifest=manifest, levels=spec.levels, **layout), {}


def _with_store(spec: RunSpec, store: BlockStore) -> RunSpec:
    """``spec`` pointing at ``store``, under the stopped run's id when resuming (its keys, its plugin)."""
    return dataclasses.replace(spec, store=str(store.folder.absolute()), run_id=store.manifest()["run_id"])


def _run(client, spec: RunSpec, todo: list[int], results: dict[int, BlockResult], retries: int, gpu: bool,
         progress: bool, on_block, store: BlockStore) -> None:
    """The blocks not done yet, then the pyramid levels above 0 (again in full on a resume: each
    chunk task rewrites its chunk from the level below, so a repeated one changes nothing)."""
    if todo:  # a resumed run whose blocks were all done has nothing to load on the workers
        _run_blocks(client, spec, todo, results, retries, gpu, progress, on_block, store)
    if set(store.done()) != set(range(spec.n_blocks)):
        raise RuntimeError(f"{store.folder}: blocks finished without their done-markers")
    for level in range(1, spec.levels):
        _fill_level(client, spec, level, retries, progress)


def _fill_level(client, spec: RunSpec, level: int, retries: int, progress: bool) -> None:
    """Pyramid ``level`` of the output, one task per chunk (each reads its 2x2 chunks of the level below)."""
    from distributed import as_completed

    from tpem_seg.io.pyramid import fill_chunk, level_chunks

    attempt = secrets.token_hex(3)
    labels = spec.output == "labels"
    futures = [client.submit(fill_chunk, spec.store, level, box, labels, retries=retries, pure=False,
                             key=f"tpem-pyramid-{spec.run_id}-{attempt}-{level}-{i}")
               for i, box in enumerate(level_chunks(spec.store, level))]
    with tqdm(total=len(futures), unit="chunk", desc=f"pyramid level {level}", disable=not progress) as bar:
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        except BaseException as err:
            client.cancel(futures)
            kept = f"every block is kept in {spec.store}; run the same command with --resume to finish the pyramid"
            if isinstance(err, Terminated):
                err.outcome = kept
            log.warning("stopped while filling pyramid level %d: %s", level, kept)
            raise


def _run_blocks(client, spec: RunSpec, todo: list[int], results: dict[int, BlockResult], retries: int,
                gpu: bool, progress: bool, on_block, store: BlockStore) -> None:
    from distributed import as_completed

    from tpem_seg.distributed.worker import BackendPlugin, run_block

    client.register_plugin(BackendPlugin(spec))
    attempt = secrets.token_hex(3)
    resources = {GPU_RESOURCE: 1} if gpu else None
    futures = [client.submit(run_block, spec, i, key=spec.task_key(attempt, i), retries=retries,
                             resources=resources, pure=False) for i in todo]
    voxels, started = 0, time.perf_counter()
    bar = tqdm(total=spec.n_blocks, initial=spec.n_blocks - len(todo), unit="block", desc="blocks",
               disable=not progress)
    try:
        for future in as_completed(futures):
            result = BlockResult.from_dict(future.result())
            results[result.index] = result
            voxels += result.voxels
            bar.update(1)
            bar.set_postfix_str(f"{voxels / max(time.perf_counter() - started, 1e-9) / 1e6:.2f} Mvox/s")
            if on_block is not None:
                on_block(result)
    except BaseException as err:
        client.cancel(futures)
        kept = f"{len(store.done())} of {spec.n_blocks} blocks kept in {store.folder}"
        if isinstance(err, Terminated):
            err.outcome = f"{kept}; run the same command with --resume to continue"
        log.warning("stopped: %s; run the same command with --resume to continue", kept)
        raise
    finally:
        bar.close()
    # Only after success: on a failure the client may be gone, and the plugin (same name) is
    # replaced when the run is resumed.
    client.unregister_worker_plugin(spec.plugin_name)


def _summary(spec: RunSpec, inputs, results: dict[int, BlockResult], planning, seconds: float,
             resumed: int) -> RunSummary:
    ran = [r for r in results.values() if not r.already_done]
    backend = ran[0].backend if ran else planning.describe()
    tiles = sum(r.tiles for r in results.values())
    summary = RunSummary(spec.shape, tiles, seconds, backend, resampled=inputs.resampled)
    summary.extra.update(blocks=spec.n_blocks, block=spec.block, redundancy=round(tiles / inputs.grid.n_tiles, 4),
                         batch_size=spec.tiles["batch_size"], resumed_blocks=resumed,
                         busy_seconds=round(sum(r.seconds for r in ran), 3),
                         workers=len({r.worker for r in ran}), backend=dict(spec.backend),
                         worker_peak_rss_mb=max((r.peak_rss_mb for r in ran), default=0), levels=spec.levels)
    if spec.tiles["skip_empty"]:
        summary.extra["skipped_tiles"] = sum(r.skipped for r in results.values())
    return summary
