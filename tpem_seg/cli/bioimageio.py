"""``tpem-seg bioimageio export|import``: thin faces over :mod:`tpem_seg.export.bioimageio`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``bioimageio`` group to the ``tpem-seg`` app."""
    group = typer.Typer(no_args_is_help=True, help="Model packages to and from bioimage.io (model spec 0.5).")
    group.command("export")(export)
    group.command("import")(import_)
    app.add_typer(group, name="bioimageio")


def export(
    model: str = typer.Argument(..., help="model package: bundled name or NAME.tpem folder"),
    output: Path = typer.Option(..., "--output", "-o", help="the bioimage.io model to write (.zip)"),
    sample: Optional[Path] = typer.Option(None, help="a real volume whose central tile becomes the test "
                                                     "input (default: a simulated one)"),
    axes: Optional[str] = typer.Option(None, help="axes of the sample when its file does not say, e.g. CZYX"),
    card: Optional[Path] = typer.Option(None, help="model card (Markdown) for the documentation"),
    author: List[str] = typer.Option(["tpem-seg developers"], help="author name (repeat for several)"),
    license: str = typer.Option("BSD-3-Clause", help="SPDX license of the weights"),
) -> None:
    """Write a model package as a bioimage.io model: ONNX (+ PyTorch) weights, test tensors, cover, docs."""
    from tpem_seg.export.bioimageio import BioimageioExportOptions, export_bioimageio

    options = BioimageioExportOptions(output, sample=sample, card=card, authors=tuple(author), license=license,
                                      axes=axes)
    typer.echo(export_bioimageio(model, options))


def import_(
    source: str = typer.Argument(..., help="bioimage.io model: zip, folder, rdf.yaml (or id/URL when online)"),
    output: Path = typer.Option(..., "--output", "-o", help="the package to write (NAME.tpem)"),
    overwrite: bool = typer.Option(False, help="replace an existing package"),
) -> None:
    """Turn a bioimage.io 3D model with ONNX weights into a tpem-seg package for the tiled runtime."""
    from tpem_seg.export.bioimageio_import import import_bioimageio

    typer.echo(import_bioimageio(source, output, overwrite=overwrite).path)
