"""``tpem-seg export`` and ``tpem-seg engine build|list``: thin faces over the export API.

torch, MONAI, ONNX and TensorRT are imported inside the command bodies, so registering these
commands keeps ``tpem-seg run`` light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tpem_seg.cli.common import command_line
from tpem_seg.export.errors import ExportError
from tpem_seg.export.onnx import DEFAULT_OPSET
from tpem_seg.util.numbers import parse_names, parse_numbers


def register(app: typer.Typer) -> None:
    """Add ``export`` and the ``engine`` group to the ``tpem-seg`` app."""
    app.command("export")(export)
    engine_app = typer.Typer(no_args_is_help=True, help="TensorRT engines cached in a model package.")
    engine_app.command("build")(engine_build)
    engine_app.command("list")(engine_list)
    app.add_typer(engine_app, name="engine")


# -- flags to options ----------------------------------------------------------------------------------


def normalization_from_flags(mode: Optional[str], percentiles: Optional[str], intensity_range: Optional[str]):
    """The NormalizationSpec the flags ask for, or None to keep the checkpoint's (percentile by default)."""
    from tpem_seg.models.manifest import NORMALIZATION_MODES, NormalizationSpec

    if mode is None:
        mode = "range" if intensity_range else "percentile" if percentiles else None
    if mode is None:
        return None
    if mode not in NORMALIZATION_MODES:
        raise ExportError(f"--normalization {mode!r} unknown; use one of {', '.join(NORMALIZATION_MODES)}")
    if mode != "range" and intensity_range:
        raise ExportError(f"--intensity-range is for --normalization range, not {mode}")
    if mode != "percentile" and percentiles:
        raise ExportError(f"--percentiles is for --normalization percentile, not {mode}")
    if mode == "range":
        if not intensity_range:
            raise ExportError("--normalization range needs --intensity-range LOW,HIGH, e.g. --intensity-range 0,1024")
        return NormalizationSpec("range", range=parse_numbers(intensity_range, "--intensity-range", 2,
                                                              example="0,1024"))
    if mode == "percentile":
        low_high = parse_numbers(percentiles, "--percentiles", 2, example="1,99.8") or (1.0, 99.8)
        return NormalizationSpec("percentile", percentiles=low_high)
    return NormalizationSpec("none")


# -- tpem-seg export ---------------------------------------------------------------------------------


def export(
    ctx: typer.Context,
    checkpoint: Path = typer.Argument(..., help="a tpem-seg fine-tuning checkpoint, or a plain MONAI UNETR "
                                      "state dict (then give --arch and its arguments)"),
    output: Path = typer.Option(..., "--output", "-o", help="package folder to write, NAME.tpem"),
    arch: Optional[str] = typer.Option(None, help="for a plain state dict: unetr (MONAI's defaults: ViT-B, "
                                       "feature_size 16, instance norm, residual blocks, proj_type conv) or a "
                                       "registered config (see `tpem-seg models`)"),
    in_channels: Optional[int] = typer.Option(None, help="input channels (MONAI in_channels)"),
    classes: Optional[int] = typer.Option(None, help="output classes (MONAI out_channels)"),
    tile: Optional[str] = typer.Option(None, help="network input D,H,W (MONAI img_size), multiples of 16, "
                                       "e.g. 128,128,128"),
    feature_size: Optional[int] = typer.Option(None, help="MONAI feature_size [16]"),
    hidden_size: Optional[int] = typer.Option(None, help="MONAI hidden_size [768]"),
    mlp_dim: Optional[int] = typer.Option(None, help="MONAI mlp_dim [3072]"),
    num_heads: Optional[int] = typer.Option(None, help="MONAI num_heads [12]"),
    proj_type: Optional[str] = typer.Option(None, help="MONAI proj_type: conv | perceptron [conv]"),
    norm_name: Optional[str] = typer.Option(None, help="MONAI norm_name: instance | batch [instance]"),
    res_block: Optional[bool] = typer.Option(None, "--res-block/--no-res-block", help="MONAI res_block [on]"),
    conv_block: Optional[bool] = typer.Option(None, "--conv-block/--no-conv-block", help="MONAI conv_block [on]"),
    qkv_bias: Optional[bool] = typer.Option(None, "--qkv-bias/--no-qkv-bias", help="MONAI qkv_bias [off]"),
    normalization: Optional[str] = typer.Option(None, help="percentile | range | none [the checkpoint's, "
                                                "else percentile]"),
    percentiles: Optional[str] = typer.Option(None, help="low,high per-channel percentiles mapped to 0,1 "
                                              "[1,99.8]"),
    intensity_range: Optional[str] = typer.Option(None, help="LOW,HIGH raw intensities mapped to 0,1 and "
                                                  "clipped, for --normalization range, e.g. 0,1024"),
    channel_names: Optional[str] = typer.Option(None, help="input channel names, e.g. vessel,neuron"),
    class_names: Optional[str] = typer.Option(None, help="class names, e.g. background,vessel,neuron"),
    spacing: Optional[str] = typer.Option(None, help="training voxel size z,y,x in µm, e.g. 5,0.99,0.99"),
    name: Optional[str] = typer.Option(None, help="package name [the output folder's stem]"),
    version: str = typer.Option("0.1.0", help="package version"),
    description: Optional[str] = typer.Option(None, help="one-line description"),
    opset: int = typer.Option(DEFAULT_OPSET, help="ONNX opset, 17 or newer"),
    instance_norm: str = typer.Option("decomposed", help="decomposed (accurate in ONNX Runtime at large tiles) | "
                                      "native (keep ONNX InstanceNormalization)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing package"),
    no_weights: bool = typer.Option(False, "--no-weights", help="leave out model.pt (no torch backend)"),
    simplify: bool = typer.Option(False, "--simplify", help="also run onnxslim on the graph"),
    parity_volume: Optional[Path] = typer.Option(None, help="volume to cut real parity tiles from [a "
                                                 "synthetic one]"),
    parity_axes: Optional[str] = typer.Option(None, help="axes of --parity-volume when its metadata lack them, "
                                              "e.g. CZYX"),
    parity_tiles: int = typer.Option(2, help="parity tiles per source (random, and real-looking)"),
    parity_tolerance: float = typer.Option(1e-4, help="max |probability difference| ONNX Runtime vs PyTorch"),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="also build a TensorRT engine here (CUDA GPU)"),
    precision: str = typer.Option("fp16", help="TensorRT engine precision: fp16 | fp32"),
    device: str = typer.Option("cuda", help="GPU for the TensorRT engine, cuda or cuda:N"),
    batch_size: int = typer.Option(4, help="TensorRT profile: tiles per call it is tuned for"),
    max_batch: Optional[int] = typer.Option(None, help="TensorRT profile: most tiles per call [2 x batch size]"),
    workspace_gib: Optional[float] = typer.Option(None, help="TensorRT builder memory cap in GiB"),
) -> None:
    """Export a checkpoint to a verified model package (ONNX + parity + manifest), optionally with a TensorRT engine."""
    from tpem_seg.export.checkpoints import ArchOptions, source_from_checkpoint
    from tpem_seg.export.exporter import ExportOptions, ParityOptions, export_package
    from tpem_seg.runtime import engines

    if tensorrt:
        engines.require_tensorrt(device)  # fail now, not after minutes of export
        engine_config = engines.EngineConfig(precision, engines.choose_profile(batch_size, max_batch), workspace_gib)
    arch_options = ArchOptions(arch, in_channels, classes, parse_numbers(tile, "--tile", 3, int, "128,128,128"),
                               feature_size, hidden_size, mlp_dim, num_heads, proj_type, norm_name, res_block,
                               conv_block, qkv_bias)
    options = ExportOptions(
        output=output, name=name, version=version, description=description,
        channel_names=parse_names(channel_names), class_names=parse_names(class_names),
        spacing=parse_numbers(spacing, "--spacing", 3, example="5,0.99,0.99"),
        normalization=normalization_from_flags(normalization, percentiles, intensity_range),
        opset=opset, instance_norm=instance_norm, include_weights=not no_weights, overwrite=overwrite,
        simplify=simplify,
        parity=ParityOptions(parity_tiles, parity_tiles, parity_volume, parity_axes, parity_tolerance),
        command=command_line(ctx))
    package, report = export_package(source_from_checkpoint(checkpoint, arch_options), options)
    typer.echo(f"{package.path}: {report.line()}")
    if tensorrt:
        _build_and_report(package, engine_config, device, parity_volume, parity_axes, parity_tiles, None)


# -- tpem-seg engine build / list --------------------------------------------------------------------


def engine_build(
    package: str = typer.Argument(..., help="model package: NAME.tpem path or bundled name"),
    precision: str = typer.Option("fp16", help="fp16 (norms and softmax held in FP32) | fp32"),
    device: str = typer.Option("cuda", help="cuda or cuda:N"),
    batch_size: int = typer.Option(4, help="profile: tiles per call the engine is tuned for"),
    max_batch: Optional[int] = typer.Option(None, help="profile: most tiles per call [2 x batch size]"),
    workspace_gib: Optional[float] = typer.Option(None, help="builder memory cap in GiB [TensorRT's default]"),
    all_fp16: bool = typer.Option(False, "--all-fp16", help="do not hold norms/softmax in FP32 (faster, drifts)"),
    optimization_level: Optional[int] = typer.Option(None, help="TensorRT builder optimisation level 0..5 [3]"),
    parity_volume: Optional[Path] = typer.Option(None, help="volume for real-looking parity tiles [synthetic]"),
    parity_axes: Optional[str] = typer.Option(None, help="axes of --parity-volume when its metadata lack them"),
    parity_tiles: int = typer.Option(2, help="parity tiles per source"),
    parity_tolerance: Optional[float] = typer.Option(None, help="max |probability difference| TensorRT vs ONNX "
                                                     "Runtime [fp16 5e-2, fp32 1e-3]"),
) -> None:
    """Build the TensorRT engine for this GPU into PACKAGE/engines/ and record its parity against ONNX Runtime."""
    from tpem_seg.models.package import open_package
    from tpem_seg.runtime import engines

    engines.require_tensorrt(device)
    config = engines.EngineConfig(precision, engines.choose_profile(batch_size, max_batch), workspace_gib,
                                  keep_fp32=not all_fp16, optimization_level=optimization_level)
    _build_and_report(open_package(package), config, device, parity_volume, parity_axes, parity_tiles,
                      parity_tolerance)


def _build_and_report(package, config, device: str, parity_volume: Optional[Path], parity_axes: Optional[str],
                      parity_tiles: int, parity_tolerance: Optional[float]) -> None:
    from tpem_seg.export.engine_build import EngineParityOptions, build_checked_engine

    parity = EngineParityOptions(parity_tiles, parity_tiles, parity_volume, parity_axes, parity_tolerance)
    record, report = build_checked_engine(package, config, device, parity)
    typer.echo(f"{record.plan}: {report.line()}")


def engine_list(package: str = typer.Argument(..., help="model package: NAME.tpem path or bundled name"),
                device: str = typer.Option("cuda", help="GPU to check the engines against")) -> None:
    """The engines cached for PACKAGE, and whether each can run on this machine."""
    from tpem_seg.models.package import open_package
    from tpem_seg.runtime import engines

    pkg = open_package(package)
    records = engines.list_engines(pkg)
    reason = engines.tensorrt_unavailable(device)
    machine = None if reason else engines.machine_info(device)
    typer.echo(f"{len(records)} engine(s) for {pkg.name}" + (f" (cannot check them here: {reason})" if reason
                                                               else f" (this machine: {machine.describe()})"))
    for record in records:
        status = "?" if machine is None else (engines.engine_status(record, machine, record.key.precision,
                                                                      engines.onnx_sha256(pkg)) or "fits")
        parity = (record.meta.get("parity") or {}).get("max_abs_prob_diff")
        parity_text = f"max |dp| {parity:.1e}" if parity is not None else "parity not measured"
        typer.echo(f"  {record.plan.name}: built {record.meta.get('built_at', '?')}, {parity_text}; {status}")
