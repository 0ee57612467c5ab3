"""The ``tpem-seg`` command line: a thin face over the Python API.

User errors (:class:`~tpem_seg.errors.TpemSegError`) end with one line on
stderr and exit code 2; Ctrl-C leaves no partial output; anything else is a
bug and exits 1 with its traceback.
"""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tpem_seg.errors import InputError, OutputError, TpemSegError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Segment 3D two-photon microscopy: vessels and neurons, fast, from few labels.")
log = logging.getLogger("tpem_seg")


@app.callback()
def _configure(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug")) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from tpem_seg.runtime.allocator import keep_freed_memory

    log.debug("malloc: %s", keep_freed_memory())


def parse_floats(text: Optional[str], n: int, what: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise InputError(f"{what} {text!r} must be {n} comma-separated numbers, e.g. "
                         f"{','.join(['5', '1', '1'][:n] if n == 3 else ['1'] * n)}")
    return values


def parse_ints(text: Optional[str], what: str) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{what} {text!r} must be comma-separated channel indices, e.g. 0,1") from None


def output_paths(inputs: list[Path], output: Path, probabilities: bool) -> list[Path]:
    """One output per input: ``output`` itself for one input, else ``output/STEM_labels.tif``."""
    suffix = "_probabilities.tif" if probabilities else "_labels.tif"
    if len(inputs) == 1 and not output.is_dir():
        return [output]
    if not output.is_dir():
        raise OutputError(f"{output} is not a folder; with several inputs, -o must name an existing folder")
    return [output / (_stem(p) + suffix) for p in inputs]


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr", ".npy"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def default_model_for(path: Path, axes: Optional[str], channels: Optional[list[int]]) -> str:
    """The bundled package whose channel count fits the input."""
    from tpem_seg.io import read_volume
    from tpem_seg.models import open_package, zoo_packages

    n = len(channels) if channels else read_volume(path, axes=axes).n_channels
    for name in zoo_packages():
        if open_package(name, verify=False).manifest.config.in_channels == n:
            return name
    raise InputError(f"no bundled model takes {n} channel(s); pass --model NAME|PATH (see `tpem-seg models`)")


@app.command()
def run(
    inputs: List[Path] = typer.Argument(..., help="volume(s): TIFF/OME-TIFF/ImageJ, .npy, .zarr/OME-Zarr"),
    output: Path = typer.Option(..., "--output", "-o", help="output file (.tif, .npy, .zarr), or a folder"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="bundled name or NAME.tpem path "
                                        "[default: the bundled model for the input's channel count]"),
    backend: str = typer.Option("auto", help="auto | torch | onnxruntime | tensorrt"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16"),
    overlap: float = typer.Option(0.25, help="tile overlap fraction per axis"),
    batch_size: Optional[int] = typer.Option(None, help="tiles per network call [default: the backend's; 2 on a CPU, up to 8 small tiles for torch bf16]"),
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
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Segment volumes; write uint8 labels (or probabilities) with the input's voxel size."""
    from tpem_seg.runtime import Segmenter

    spacing_t = parse_floats(spacing, 3, "--spacing")
    channel_list = parse_ints(channels, "--channels")
    outputs = output_paths(inputs, output, probabilities)
    model_name = model or default_model_for(inputs[0], axes, channel_list)
    with Segmenter(model_name, backend=backend, device=device, precision=precision,
                   output="probabilities" if probabilities else "labels", channels=channel_list,
                   resample=resample, progress=progress, overlap=overlap, batch_size=batch_size,
                   tta=tta, skip_empty=skip_empty, block=block) as segmenter:
        for src, dst in zip(inputs, outputs):
            summary = segmenter.segment_file(src, dst, axes=axes, spacing=spacing_t)
            typer.echo(f"{dst}: {summary.line()}", err=True)


@app.command()
def demo(
    output: Path = typer.Option(Path("tpem-demo"), "--output", "-o", help="folder for the demo's files"),
    model: str = typer.Option("tpem-2ch", help="a two-channel (vessel, neuron) package"),
    seed: int = typer.Option(2024, help="simulation seed"),
    backend: str = typer.Option("auto", help="auto | torch | onnxruntime | tensorrt"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
) -> None:
    """Simulate a two-channel stack, segment it, write an MIP overlay PNG, print Dice against the truth."""
    from tpem_seg.demo import run_demo

    result = run_demo(output, model=model, seed=seed, backend=backend, device=device)
    typer.echo(f"simulated volume: {result.volume}\nlabels: {result.labels}\ntruth: {result.truth}\n"
               f"overlay (MIP: image | truth | labels): {result.overlay}\n{result.summary.line()}")
    typer.echo("Dice against the simulated truth: " + ", ".join(f"{k} {v:.3f}" for k, v in result.dice.items()))


@app.command()
def info() -> None:
    """Versions, backends and devices available here."""
    import importlib.metadata as md

    import numpy as np

    from tpem_seg import __version__
    from tpem_seg.runtime.backends import available_backends
    from tpem_seg.runtime.devices import cpu_count, cpu_model, cpu_supports_bf16, cuda_device_count

    def version_of(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    lines = [f"tpem-seg {__version__}", f"python {platform.python_version()} ({platform.machine()})",
             f"numpy {np.__version__}"]
    lines += [f"{d} {version_of(d)}" for d in ("onnxruntime", "onnxruntime-gpu", "torch", "monai", "tensorrt",
                                                "tifffile", "imagecodecs", "zarr")]
    lines.append(f"cpu: {cpu_model()}, {cpu_count()} cores, native bf16: {cpu_supports_bf16()}")
    lines.append(f"cuda GPUs: {cuda_device_count()}")
    for device in ("cpu", "cuda") if cuda_device_count() else ("cpu",):
        for name, reason in available_backends(device).items():
            lines.append(f"backend {name} on {device}: {'available' if reason is None else reason}")
    typer.echo("\n".join(lines))


@app.command()
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


#: Modules whose ``register(app)`` adds their commands; each imports its heavy libraries
#: (torch, MONAI) inside the command bodies, so ``tpem-seg run`` stays light.
SUBCOMMAND_MODULES: tuple[str, ...] = ("tpem_seg.train.commands", "tpem_seg.export.commands", "tpem_seg.runtime.commands")


def _register_subcommands() -> None:
    import importlib

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).register(app)


_register_subcommands()


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point. Typer handles usage errors (exit 2) and Ctrl-C ("Aborted!", exit 1,
    after the writers have removed their partial files); user errors end here with exit 2."""
    try:
        app(args=argv)
    except TpemSegError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
