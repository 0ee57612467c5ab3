"""``tpem-seg run``, ``demo``, ``info`` and ``models``: segmenting volumes and describing what is installed.

Heavy libraries (torch, ONNX Runtime) are imported inside the command bodies, through the runtime.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tpem_seg.errors import InputError
from tpem_seg.util.numbers import parse_numbers


def register(app: typer.Typer) -> None:
    """Add ``run``, ``demo``, ``info`` and ``models`` to the ``tpem-seg`` app."""
    for command in (run, convert, demo, info, models):
        app.command()(command)


def default_model_for(path: Path, axes: Optional[str], channels: Optional[tuple[int, ...]]) -> str:
    """The bundled package whose channel count fits the input."""
    from tpem_seg.io import read_volume
    from tpem_seg.models import open_package, zoo_packages

    n = len(channels) if channels else read_volume(path, axes=axes).n_channels
    for name in zoo_packages():
        if open_package(name, verify=False).manifest.config.in_channels == n:
            return name
    raise InputError(f"no bundled model takes {n} channel(s); pass --model NAME|PATH (see `tpem-seg models`)")


def run(
    inputs: List[str] = typer.Argument(..., help="volume(s): TIFF/OME-TIFF/ImageJ, .npy, .zarr/OME-Zarr; "
                                       "folders (their volumes) and quoted globs too"),
    output: Path = typer.Option(..., "--output", "-o", help="output file (.tif, .npy, .zarr), or a folder"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="bundled name or NAME.tpem path "
                                        "[default: the bundled model for the input's channel count]"),
    backend: str = typer.Option("auto", help="auto | torch | onnxruntime | openvino | tensorrt"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 | bf16 [default: fp32, or the tuned choice]"),
    overlap: float = typer.Option(0.25, help="tile overlap fraction per axis"),
    batch_size: Optional[int] = typer.Option(None, help="tiles per network call [default: the backend's or the tuned choice; 2 on a CPU, up to 8 small tiles for torch bf16]"),
    axes: Optional[str] = typer.Option(None, help="input axes when metadata lacks them, e.g. CZYX"),
    channels: Optional[str] = typer.Option(None, help="input channels for the model, in order, e.g. 0,1"),
    spacing: Optional[str] = typer.Option(None, help="input voxel size z,y,x in µm, e.g. 5,0.99,0.99"),
    probabilities: bool = typer.Option(False, "--probabilities", help="write float16 class probabilities "
                                       "(class axis first) instead of labels"),
    tta: bool = typer.Option(False, "--tta", help="average 8 flips per tile (8x slower)"),
    skip_empty: bool = typer.Option(False, "--skip-empty", help="give tiles without foreground background labels "
                                    "without running the network (see benchmarks/results/README_section.md)"),
    resample: bool = typer.Option(True, "--resample/--no-resample", help="resample to the model's voxel size"),
    block: str = typer.Option("auto", help="block core Z,Y,X in voxels (memory set by the block, same output), "
                              "auto (blocks for planes wider than 1024 or resampled input) or off"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                            help="progress bars [default: when stderr is a terminal]"),
    name_template: Optional[str] = typer.Option(None, help="output name in an -o folder, {name} = input stem "
                                                "[default: {name}_labels.tif, {name}_probabilities.tif]"),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="leave inputs whose output exists"),
    json_out: Optional[str] = typer.Option(None, "--json", help="write one JSON record per input to FILE "
                                           "(- for stdout)"),
    uncertainty: Optional[Path] = typer.Option(None, "--uncertainty", help="also write a float32 uncertainty map "
                                               "(predictive entropy, 0-1) here, or into this folder as "
                                               "{name}_uncertainty.tif: Monte-Carlo dropout for a package trained "
                                               "with dropout, else the spread over the 8 flips"),
    mc_passes: int = typer.Option(20, "--mc-passes", help="Monte-Carlo dropout passes per tile for --uncertainty"),
    tune: bool = typer.Option(True, "--tune/--no-tune", help="--backend auto on a CPU: on a model's first run here, "
                              "time the faithful configurations on a few tiles (a few seconds, cached) and run the "
                              "fastest; --no-tune keeps the fixed order"),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="run the blocks on dask workers: local:N | "
                                          "tcp://HOST:PORT | slurm | lsf (one input, -o OUT.zarr; the "
                                          "[distributed] extra; see docs/scale.md)"),
    cluster_config: Optional[Path] = typer.Option(None, "--cluster-config", help="YAML/JSON of dask-jobqueue "
                                                  "options for slurm/lsf (cores, memory, queue, walltime, jobs...)"),
    resume: bool = typer.Option(False, "--resume", help="with --cluster: continue the stopped run of -o "
                                "(refused when the model, options or input differ)"),
    pyramid: int = typer.Option(1, "--pyramid", help="OME-Zarr output (.zarr): pyramid levels in all, for "
                                "viewers (level n halves y and x n times; z kept); 1: full resolution alone"),
) -> None:
    """Segment volumes; write uint8 labels (or probabilities) with the input's voxel size."""
    from tpem_seg.cli.run_helpers import UNCERTAINTY_TEMPLATE, JsonLines, expand_inputs, output_paths, run_record
    from tpem_seg.io import read_volume
    from tpem_seg.io.paths import check_outputs
    from tpem_seg.models import open_package
    from tpem_seg.models.package import sha256_file
    from tpem_seg.runtime import Segmenter
    from tpem_seg.runtime.tune import backend_for_run

    spacing_t = parse_numbers(spacing, "--spacing", 3, example="5,0.99,0.99")
    channel_list = parse_numbers(channels, "--channels", kind=int, example="0,1")
    sources = expand_inputs(inputs)
    outputs = output_paths(sources, output, probabilities, name_template)
    spreads = (output_paths(sources, uncertainty, False, UNCERTAINTY_TEMPLATE, "--uncertainty") if uncertainty
               else [None] * len(sources))
    check_outputs(sources * 2 if uncertainty else sources, outputs + spreads if uncertainty else outputs)
    jobs = [(s, d, u) for s, d, u in zip(sources, outputs, spreads) if not (skip_existing and d.exists())]
    for src, dst in zip(sources, outputs):
        if skip_existing and dst.exists():
            typer.echo(f"{dst}: exists, skipped", err=True)
    if not jobs:
        return
    if pyramid < 1:
        raise InputError(f"--pyramid {pyramid}: give the number of pyramid levels in all, 1 (full resolution "
                         "alone) or more")
    if pyramid > 1 and any(d.suffix.lower() != ".zarr" for _, d, _ in jobs):
        raise InputError(f"--pyramid {pyramid} writes OME-Zarr pyramid levels; name the output .zarr (in a folder: "
                         "--name-template '{name}_labels.zarr')")
    if resume and cluster is None:
        raise InputError("--resume continues a distributed run; add --cluster (e.g. --cluster local:2)")
    if cluster is not None and uncertainty is not None:
        raise InputError("--uncertainty runs on one machine (in z-slabs); drop --cluster for that run")
    package = open_package(model or default_model_for(jobs[0][0], axes, channel_list))
    if cluster is not None:
        import importlib
        import logging

        from tpem_seg.distributed import parse_cluster, require_dask, run_distributed

        require_dask()
        importlib.import_module("distributed")  # sets its loggers to INFO on import; then they follow -v
        logging.getLogger("distributed").setLevel(logging.getLogger().getEffectiveLevel())

        if len(jobs) != 1:
            raise InputError(f"--cluster runs one input at a time, not {len(jobs)}; give one volume")
        (src, dst, _), = jobs
        summary = run_distributed(src, dst, package, cluster=parse_cluster(cluster, cluster_config),
                                  backend=backend, device=device, precision=precision or "fp32",
                                  output="probabilities" if probabilities else "labels", channels=channel_list,
                                  resample=resample, block=block, axes=axes, spacing=spacing_t, resume=resume,
                                  progress=sys.stderr.isatty() if progress is None else progress,
                                  pyramid=pyramid, overlap=overlap, batch_size=batch_size, tta=tta,
                                  skip_empty=skip_empty)
        typer.echo(f"{dst}: {summary.line()}", err=True)
        spacing_in = spacing_t or read_volume(src, axes=axes).spacing
        used = package.manifest.spacing if summary.resampled or spacing_in is None else spacing_in
        records = JsonLines(json_out)
        records.write(run_record(src, dst, spacing_in, used, package.manifest.name,
                                 sha256_file(package.path / "manifest.json"), summary.extra["backend"]["name"],
                                 summary.extra["backend"]["device"], summary.extra["backend"]["precision"],
                                 summary.shape, summary.tiles, summary.seconds))
        records.close()
        return
    chosen = backend_for_run(package, jobs[0][0], backend=backend, device=device, precision=precision,
                             tune_here=tune, axes=axes, channels=channel_list, overlap=overlap,
                             batch_size=batch_size)
    records = JsonLines(json_out)
    with Segmenter(package, backend=chosen,
                   output="probabilities" if probabilities else "labels", channels=channel_list,
                   resample=resample, progress=sys.stderr.isatty() if progress is None else progress,
                   overlap=overlap, batch_size=batch_size, tta=tta, skip_empty=skip_empty,
                   block=block, mc_passes=mc_passes) as segmenter:
        manifest, package_sha = segmenter.package.manifest, sha256_file(segmenter.package.path / "manifest.json")
        try:
            for src, dst, spread in jobs:
                summary = segmenter.segment_file(src, dst, axes=axes, spacing=spacing_t, uncertainty=spread,
                                                 pyramid=pyramid)
                typer.echo(f"{dst}: {summary.line()}", err=True)
                spacing_in = spacing_t or read_volume(src, axes=axes).spacing
                used = manifest.spacing if summary.resampled or spacing_in is None else spacing_in
                backend_ = segmenter.backend
                records.write(run_record(src, dst, spacing_in, used, manifest.name, package_sha, backend_.name,
                                         backend_.device, backend_.precision, summary.shape, summary.tiles,
                                         summary.seconds, spread, summary.extra.get("uncertainty")))
        finally:
            records.close()


def convert(
    source: Path = typer.Argument(..., help="volume to convert: TIFF/OME-TIFF/ImageJ, .npy, .zarr"),
    output: Path = typer.Argument(..., help="output: .zarr (OME-Zarr 0.5), .tif or .npy"),
    axes: Optional[str] = typer.Option(None, help="input axes when metadata lack them, e.g. CZYX"),
    spacing: Optional[str] = typer.Option(None, help="input voxel size z,y,x in µm, e.g. 5,0.99,0.99"),
    compression: Optional[str] = typer.Option(None, help="zarr: zstd (default), zlib, blosc, none; TIFF: zlib, lzw"),
) -> None:
    """Copy a volume into another format plane by plane, e.g. a TIFF into OME-Zarr for distributed runs."""
    from tpem_seg.io.convert import convert_volume

    written = convert_volume(source, output, axes=axes, compression=compression,
                             spacing=parse_numbers(spacing, "--spacing", 3, example="5,0.99,0.99"))
    typer.echo(f"wrote {written}", err=True)


def demo(
    output: Path = typer.Option(Path("tpem-demo"), "--output", "-o", help="folder for the demo's files"),
    model: str = typer.Option("tpem-2ch", help="a two-channel (vessel, neuron) package"),
    seed: int = typer.Option(2024, help="simulation seed"),
    backend: str = typer.Option("auto", help="auto | torch | onnxruntime | openvino | tensorrt"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
) -> None:
    """Simulate a two-channel stack, segment it, write an MIP overlay PNG, print Dice against the truth."""
    from tpem_seg.demo import run_demo

    result = run_demo(output, model=model, seed=seed, backend=backend, device=device)
    typer.echo(f"simulated volume: {result.volume}\nlabels: {result.labels}\ntruth: {result.truth}\n"
               f"overlay (MIP: image | truth | labels): {result.overlay}\n{result.summary.line()}")
    typer.echo("Dice against the simulated truth: " + ", ".join(f"{k} {v:.3f}" for k, v in result.dice.items()))


def info() -> None:
    """Versions, backends and devices available here."""
    import importlib.metadata as md

    import numpy as np

    from tpem_seg.version import __version__
    from tpem_seg.runtime.backends import available_backends
    from tpem_seg.runtime.devices import cpu_count, cpu_model, cpu_supports_bf16, cuda_device_count

    def version_of(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    lines = [f"tpem-seg {__version__}", f"python {platform.python_version()} ({platform.machine()})",
             f"numpy {np.__version__}"]
    lines += [f"{d} {version_of(d)}" for d in ("onnxruntime", "onnxruntime-gpu", "openvino", "torch", "monai", "tensorrt",
                                                "tifffile", "imagecodecs", "zarr")]
    lines.append(f"cpu: {cpu_model()}, {cpu_count()} cores, native bf16: {cpu_supports_bf16()}")
    lines.append(f"cuda GPUs: {cuda_device_count()}")
    for device in ("cpu", "cuda") if cuda_device_count() else ("cpu",):
        for name, reason in available_backends(device).items():
            lines.append(f"backend {name} on {device}: {'available' if reason is None else reason}")
    from tpem_seg.runtime.tune import cache_dir, cached_here

    tuned = cached_here()
    lines += [f"tuned on this CPU ({cache_dir()}):" if tuned else "tuned on this CPU: nothing yet (`tpem-seg tune MODEL`)"]
    lines += [f"  {result.line()}" for result in tuned]
    typer.echo("\n".join(lines))


def models(packages: List[Path] = typer.Argument(None, help="package folders to describe too")) -> None:
    """Bundled model packages (and any given ones), and the named architecture configs."""
    from tpem_seg.models import list_models, open_package, zoo_packages
    from tpem_seg.models.registry import get_spec

    entries = [(name, str(path)) for name, path in zoo_packages().items()] + [(str(p), str(p)) for p in
                                                                                 packages or []]
    typer.echo("packages:" if entries else "packages: none bundled yet")
    for label, path in entries:
        m = open_package(path).manifest
        spacing = "x".join(f"{s:g}" for s in m.spacing) + " µm" if m.spacing else "any voxel size"
        typer.echo(f"  {label}: {', '.join(m.channels)} -> {', '.join(m.classes)}; tile "
                   f"{'x'.join(map(str, m.tile))}; {spacing}; {m.description}")
    typer.echo("architectures:")
    for name in list_models():
        typer.echo(f"  {name}: {get_spec(name).description}")
