"""``tpem-seg bench``: tpem-seg configurations against the PyTorch baseline, on one volume.

A thin face over :mod:`tpem_seg.runtime.bench`; torch, MONAI and ONNX Runtime are imported inside
the command body, so registering it keeps ``tpem-seg run`` light. ``--model`` may also name an
architecture of the registry (``unetr-b16``...): the command then builds a package with random
weights in a cache folder, through the export layer (``tpem_seg.export``, imported in the body:
this module is the CLI's face, above the layers; the runtime proper never imports export).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Optional

import typer

from tpem_seg.cli.common import command_line
from tpem_seg.errors import InputError
from tpem_seg.util.cache import cache_root
from tpem_seg.util.numbers import parse_choices, parse_ranges

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    """Add ``bench`` and ``tune`` to the ``tpem-seg`` app."""
    app.command("bench")(bench)
    app.command("tune")(tune)


def bench_cache_dir() -> Path:
    """Where packages with random weights for benchmarks are built once."""
    return cache_root() / "bench"


def resolve_bench_model(model: str, cache: Path, seed: int = 0):
    """An opened package: a bundled name or a path, else a registry architecture with random weights
    (built once into ``cache``, seeded)."""
    from tpem_seg.errors import PackageError
    from tpem_seg.models import open_package
    from tpem_seg.models.registry import list_models

    try:
        return open_package(model)
    except PackageError:
        if model not in list_models():
            raise
    path = cache / f"{model}-random-seed{seed}.tpem"
    if (path / "manifest.json").is_file():
        return open_package(path)
    log.info("building %s with random weights (seed %d) at %s", model, seed, path)
    import torch

    from tpem_seg.export.package import package_from_model
    from tpem_seg.models import Manifest, create_model, get_config

    torch.manual_seed(seed)
    config = get_config(model)
    classes = ["background", "vessel", "neuron", *[f"class{k}" for k in range(3, config.out_channels)]]
    manifest = Manifest(name=f"{model}-random", config=config,
                        channels=["vessel", "neuron", *[f"ch{c}" for c in range(2, config.in_channels)]][
                            :config.in_channels],
                        classes=classes[:config.out_channels],
                        description=f"{model} with random weights (seed {seed}), for benchmarks")
    return package_from_model(create_model(config), manifest, path, overwrite=True)


def bench(
    ctx: typer.Context,
    input: str = typer.Argument(..., metavar="INPUT", help="a volume file, or synthetic:Z,Y,X"),
    model: str = typer.Option(..., "--model", "-m", help="bundled package name, NAME.tpem path, or an "
                              "architecture (unetr-b16, unetr-s16, ...) for random weights"),
    backends: str = typer.Option("torch,onnxruntime,openvino,tensorrt,native",
                                 help="comma-separated: torch, onnxruntime, openvino, tensorrt, native (libtpem "
                                 "through tpem_seg_cpp, fp32 CPU, onnxruntime's threads)"),
    precisions: Optional[str] = typer.Option(None, help="comma-separated: fp32, bf16, fp16, int8 (onnxruntime) "
                                             "[default: fp32,bf16 on a CPU; fp32,fp16,bf16 on a GPU]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the report as JSON here"),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="write the report as markdown here"),
    overlap: float = typer.Option(0.25, help="tile overlap fraction per axis"),
    batch_size: Optional[int] = typer.Option(None, help="tiles per network call [default: each backend's]"),
    baseline_batch_size: Optional[int] = typer.Option(None, help="the baseline's sw_batch_size [default: "
                                                      "--batch-size, else 2 on a CPU, 4 on a GPU]"),
    warmup: int = typer.Option(1, help="warm-up runs per configuration (the first gives the agreement)"),
    repeats: int = typer.Option(3, help="timed end-to-end runs per configuration, interleaved"),
    network_repeats: Optional[int] = typer.Option(None, help="timed network-only passes [default: --repeats]"),
    crop: Optional[str] = typer.Option(None, help="crop the input first: z0:z1,y0:y1,x0:x1"),
    axes: Optional[str] = typer.Option(None, help="input axes when metadata lacks them, e.g. CZYX"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile torch fp16/bf16 "
                                           "[default: on a GPU]"),
    cuda_graphs: Optional[bool] = typer.Option(None, "--cuda-graphs/--no-cuda-graphs", help="CUDA graphs for "
                                               "torch fp16/bf16 [default: on a GPU]"),
    channels_last: bool = typer.Option(False, "--channels-last", help="torch configurations in channels-last 3D"),
    budget: Optional[float] = typer.Option(None, help="skip configurations not warmed up after this many seconds"),
    seed: int = typer.Option(0, help="seed of synthetic volumes and random weights"),
    configs: Optional[str] = typer.Option(None, help="explicit configurations instead of --backends x "
                                          "--precisions, e.g. torch-bf16,torch-bf16-cl,onnxruntime-fp32-nospin,"
                                          "native-fp32-t2 (flags: compile, graphs, cl, cast, nospin, t<N>)"),
) -> None:
    """Time tpem-seg configurations against MONAI's sliding window in PyTorch eager FP32 (the baseline)."""
    from tpem_seg.runtime import bench as B
    from tpem_seg.runtime.devices import resolve_device

    device = resolve_device(device)
    from tpem_seg.runtime.backends import BACKENDS

    backend_names = parse_choices(backends, "--backends", (*BACKENDS, "native"))
    precision_names = parse_choices(precisions or ("fp32,fp16,bf16" if device.startswith("cuda") else "fp32,bf16"),
                             "--precisions", ("fp32", "fp16", "bf16", "int8"))
    if repeats < 1 or warmup < 1:
        raise InputError("--repeats and --warmup must be at least 1")
    if any(b is not None and b < 1 for b in (batch_size, baseline_batch_size)):
        raise InputError("--batch-size and --baseline-batch-size must be at least 1")
    settings = B.BenchSettings(overlap=overlap, batch_size=batch_size, baseline_batch_size=baseline_batch_size,
                               warmup=warmup, repeats=repeats,
                               network_repeats=network_repeats, budget_s=budget)
    package = resolve_bench_model(model, bench_cache_dir(), seed)
    volume, input_info = B.load_input(input, package.manifest.config.in_channels, parse_ranges(crop, "--crop", 3, "0:30,0:256,0:256"), axes, seed)
    if configs:
        chosen = [B.BenchConfig.parse(name.strip(), device) for name in configs.split(",") if name.strip()]
        precision_names = sorted({c.precision for c in chosen})
    else:
        chosen = B.default_configs(device, backend_names, precision_names, compile, cuda_graphs, channels_last)
    command = command_line(ctx)
    with tempfile.TemporaryDirectory(prefix="tpem-bench-") as workdir:
        calibration = None
        if "int8" in precision_names:
            calibration = B.plan_tiles_for(volume, package, settings)[:settings.calibration_tiles]
        runners = B.make_runners(package, chosen, settings, device, Path(workdir), calibration)
        report = B.run_bench(volume, package, runners, settings, command=command, input_info=input_info,
                             progress=lambda line: typer.echo(line, err=True))
    B.write_report(report, json_out, markdown_out)
    typer.echo(B.markdown_table(report))
    failed = [r for r in report.records if r.status == "failed"]
    for r in report.records:
        if r.agrees is False:
            typer.echo(f"warning: {r.name} disagrees with the baseline (voxels agree "
                       f"{r.agreement.voxel_agreement:.2%}, max abs Δp {r.agreement.max_abs_prob_diff:.2e})", err=True)
    if failed:
        reasons = "; ".join(f"{r.name}: {r.reason}" for r in failed)
        typer.echo(f"error: {len(failed)} configuration(s) failed: {reasons}", err=True)
        raise typer.Exit(1)


def tune(
    model: str = typer.Argument(..., help="bundled package name or NAME.tpem path"),
    input: Optional[Path] = typer.Argument(None, help="a volume to take the tiles from [default: a simulated stack]"),
    axes: Optional[str] = typer.Option(None, help="input axes when metadata lacks them, e.g. CZYX"),
    budget: float = typer.Option(8.0, help="seconds after which no further configuration is started"),
) -> None:
    """Time MODEL's faithful configurations on this CPU and cache the fastest (`run --backend auto` uses it)."""
    from tpem_seg.io import Volume, read_volume
    from tpem_seg.models import open_package
    from tpem_seg.runtime import tune as T

    package = open_package(model)
    if input is None:
        from tpem_seg.runtime.bench.inputs import simulated_stack

        d, h, w = package.manifest.tile
        volume = Volume(simulated_stack((2 * d, 4 * h, 4 * w), package.manifest.config.in_channels), "CZYX")
    else:
        volume = read_volume(input, axes=axes)
    result = T.tune(package, T.sample_tiles(volume, package), budget_s=budget)
    for t in result.trials:
        spec = T.BackendSpec.from_dict(t.spec)
        timing = "not timed" if t.seconds_per_tile is None else f"{1000 * t.seconds_per_tile:.1f} ms/tile"
        verdict = "" if t.faithful is None else ("faithful" if t.faithful else f"NOT faithful: {t.reason}")
        typer.echo(f"{spec.line()}, batch {t.batch_size}: {timing} {verdict or (t.reason or '')}".rstrip())
    typer.echo(f"chosen: {result.line()}")
