"""Checkpoint -> verified model package: ONNX, checks, parity, manifest, checksums.

The steps, each a small function: read the source (:mod:`tpem_seg.export.checkpoints`),
build the manifest, export ONNX (dynamic batch, fixed tile, opset >= 17), make InstanceNormalization accurate in ONNX
Runtime, run ``onnx.checker``
and the I/O contract, optionally simplify, stage a package in a temporary folder, measure
ONNX Runtime against PyTorch on random and real-looking tiles through the runtime's own
backends, and only if that passes write the final package (temporary name, then rename).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tpem_seg.export.checkpoints import ExportSource, describe_config, model_from_source
from tpem_seg.export.errors import ExportError
from tpem_seg.export.onnx import (DEFAULT_OPSET, INSTANCE_NORM_MODES, MC_DROPOUT_FILE, check_onnx, check_opset,
                                  decompose_instance_norm,
                                  export_dropout_onnx, export_onnx, onnx_opset, simplify_onnx)
from tpem_seg.export.parity import (FP32_TOLERANCE, ParityReport, check_parity, dropout_graph_parity, export_parity,
                                    parity_tiles)
from tpem_seg.errors import PackageError
from tpem_seg.models.manifest import Manifest, NormalizationSpec
from tpem_seg.models.package import SUFFIX, ModelPackage, open_package, write_package
from tpem_seg.util.provenance import source_commit

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
ONNX_FILE = "model.onnx"


@dataclass(frozen=True)
class ParityOptions:
    """Tiles for export parity: ``random`` uniform tiles plus ``real`` tiles cut from ``volume``
    (axes ``volume_axes`` when its metadata lack them; a synthetic volume when None); probabilities
    must agree within ``tolerance``."""

    random: int = 2
    real: int = 2
    volume: Path | None = None
    volume_axes: str | None = None
    tolerance: float = FP32_TOLERANCE
    batch_size: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.random < 0 or self.real < 0 or self.random + self.real == 0:
            raise ExportError("parity needs at least one tile; use --parity-tiles 1 or more")
        if self.tolerance <= 0:
            raise ExportError(f"--parity-tolerance {self.tolerance} must be positive")


@dataclass(frozen=True)
class ExportOptions:
    """What to write and how.

    output: the package folder (``NAME.tpem``). name: the package name (default: output's stem).
    channel_names / class_names / spacing / normalization: override what the checkpoint says
    (a plain state dict says nothing: defaults are ``ch0..``, ``background, class1..``, no voxel
    size, percentile normalisation). spacing is ``(z, y, x)`` in µm.
    instance_norm: ``decomposed`` rewrites InstanceNormalization for accuracy in ONNX Runtime (see
    :func:`~tpem_seg.export.onnx.decompose_instance_norm`); ``native`` keeps the ONNX op.
    include_weights: also store ``model.pt`` (the torch backend needs it).
    command: the command line, recorded in the manifest's provenance.
    """

    output: Path
    name: str | None = None
    version: str = "0.1.0"
    description: str | None = None
    channel_names: tuple[str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    spacing: tuple[float, float, float] | None = None
    normalization: NormalizationSpec | None = None
    opset: int = DEFAULT_OPSET
    instance_norm: str = "decomposed"
    include_weights: bool = True
    overwrite: bool = False
    simplify: bool = False
    parity: ParityOptions = field(default_factory=ParityOptions)
    command: str | None = None

    @property
    def package_name(self) -> str:
        stem = self.output.name
        return self.name or (stem[: -len(SUFFIX)] if stem.endswith(SUFFIX) else stem)


def export_package(source: ExportSource, options: ExportOptions) -> tuple[ModelPackage, ParityReport]:
    """Export ``source`` to the package ``options.output``; refuse (ParityError) if parity fails.

    Returns the written package and its parity report (also stored in the manifest).
    """
    check_destination(options.output, options.overwrite)
    check_opset(options.opset)
    if options.instance_norm not in INSTANCE_NORM_MODES:
        raise ExportError(f"--instance-norm {options.instance_norm!r} unknown; use {' or '.join(INSTANCE_NORM_MODES)}")
    manifest = manifest_for(source, options)
    model = model_from_source(source)
    log.info("exporting UNETR(%s) from %s", describe_config(source.config), source.path)
    with tempfile.TemporaryDirectory(prefix="tpem-export-") as tmp:
        staged = stage_package(model, manifest, Path(tmp), options)
        parity = options.parity
        tiles = parity_tiles(staged.manifest, parity.random, parity.real, parity.volume, parity.seed,
                             parity.volume_axes)
        report = check_parity(export_parity(staged, tiles, parity.tolerance, parity.batch_size),
                              f"the ONNX export of {source.path.name}")
        manifest.parity = {"onnxruntime_vs_torch": report.to_dict()}
        files = {ONNX_FILE: staged.onnx_path}
        if staged.mc_dropout_path is not None:
            mc_report = check_parity(dropout_graph_parity(staged, tiles, parity.tolerance, parity.batch_size),
                                     f"the dropout graph of {source.path.name}")
            manifest.parity["onnxruntime_dropout_graph_vs_torch"] = mc_report.to_dict()
            manifest.mc_dropout_file = MC_DROPOUT_FILE
            files[MC_DROPOUT_FILE] = staged.mc_dropout_path
        if options.include_weights:
            files[WEIGHTS_FILE] = staged.weights_path
        manifest.weights_file = WEIGHTS_FILE if options.include_weights else None
        package = write_package(options.output, manifest, files, overwrite=options.overwrite)
    log.info("wrote %s", package.path)
    return open_package(package.path), report


def check_destination(output: Path, overwrite: bool) -> None:
    """Fail before the slow part if the package exists (without overwrite) or is not a ``.tpem`` folder."""
    if not output.name.endswith(SUFFIX):
        raise ExportError(f"-o {output} should name a package folder ending in {SUFFIX}, e.g. -o vessels{SUFFIX}")
    if output.exists() and not overwrite:
        raise PackageError(f"{output} exists; choose another name or pass --overwrite")
    if output.exists() and not output.is_dir():
        raise ExportError(f"{output} exists and is not a folder; choose another name")


def stage_package(model, manifest: Manifest, folder: Path, options: ExportOptions) -> ModelPackage:
    """Export ONNX and weights into ``folder``: an unverified package, in memory, for parity.

    Sets ``manifest.onnx_opset`` to the opset the file declares. The staged package always has
    weights (the PyTorch side of parity loads them); the final package is written from these
    files only after parity passes.
    """
    import torch

    config = manifest.config
    onnx_path = export_onnx(model, folder / ONNX_FILE, config.in_channels, config.tile, opset=options.opset)
    if options.instance_norm == "decomposed":
        decompose_instance_norm(onnx_path)
    if options.simplify:
        simplify_onnx(onnx_path)
    check_onnx(onnx_path, config.in_channels, config.out_channels, config.tile)
    mc_file = None
    if config.dropout_rate > 0:
        export_dropout_onnx(model, folder / MC_DROPOUT_FILE, config, options.opset, options.instance_norm)
        mc_file = MC_DROPOUT_FILE
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    manifest.onnx_opset = onnx_opset(onnx_path)  # what the file declares (the exporter may convert)
    return ModelPackage(folder, replace(manifest, weights_file=WEIGHTS_FILE, mc_dropout_file=mc_file, files={},
                                        parity={}))


def manifest_for(source: ExportSource, options: ExportOptions) -> Manifest:
    """The manifest: names, voxel size and normalisation from the options, else from the checkpoint."""
    config, meta = source.config, source.meta
    channels = list(options.channel_names or meta.get("channels") or [f"ch{i}" for i in range(config.in_channels)])
    classes = list(options.class_names or meta.get("classes")
                   or ["background"] + [f"class{i}" for i in range(1, config.out_channels)])
    _check_count("--channel-names", channels, config.in_channels, "input channels")
    _check_count("--class-names", classes, config.out_channels, "output classes")
    spacing = options.spacing or (tuple(meta["spacing"]) if meta.get("spacing") else None)
    normalization = options.normalization or (NormalizationSpec(**meta["normalization"])
                                              if meta.get("normalization") else NormalizationSpec())
    description = options.description or f"UNETR ({describe_config(config)}) from {source.path.name}"
    return Manifest(name=options.package_name, version=options.version, description=description, config=config,
                    channels=channels, classes=classes, spacing=spacing, normalization=normalization,
                    onnx_file=ONNX_FILE, onnx_opset=options.opset, provenance=provenance(source, options),
                    metrics=dict(meta.get("metrics", {})))


def _check_count(flag: str, names: list[str], expected: int, what: str) -> None:
    if len(names) != expected:
        raise ExportError(f"{flag} gives {len(names)} name(s) but the network has {expected} {what}; "
                          f"give {expected} comma-separated names")


def provenance(source: ExportSource, options: ExportOptions) -> dict[str, Any]:
    """Where the package came from: command, versions, commit, the source checkpoint and its training."""
    from tpem_seg.version import __version__

    training = {k: source.meta[k] for k in ("command", "commit", "data", "train_config") if k in source.meta}
    return {
        "command": options.command,
        "tpem_seg": __version__,
        "commit": source_commit(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"file": source.path.name, "sha256": source.sha256, "kind": source.kind},
        "exporter": exporter_versions(options.opset),
        **({"training": training} if training else {}),
    }


def exporter_versions(opset: int) -> dict[str, Any]:
    import importlib.metadata as md

    versions: dict[str, Any] = {"opset": opset}
    for dist in ("torch", "monai", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return versions
