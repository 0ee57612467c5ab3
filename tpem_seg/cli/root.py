"""The ``tpem-seg`` app: logging set-up, the command modules, and how errors end.

User errors (:class:`~tpem_seg.errors.TpemSegError`) end with one line on
stderr and exit code 2; Ctrl-C, SIGTERM and SIGHUP leave no partial output (exit
128 + signal); anything else is a bug and exits 1 with its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from tpem_seg.cli import bench, bioimageio, export, segment, train
from tpem_seg.errors import TpemSegError

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Segment 3D two-photon microscopy: vessels and neurons, fast, from few labels.")
log = logging.getLogger("tpem_seg")


#: Distributions behind the backends, for --version (their metadata only: nothing is imported).
BACKEND_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt")


def _print_version(value: bool) -> None:
    if value:
        import importlib.metadata as md

        from tpem_seg.version import __version__

        found = []
        for dist in BACKEND_DISTRIBUTIONS:
            try:
                found.append(f"{dist} {md.version(dist)}")
            except md.PackageNotFoundError:
                continue
        typer.echo(f"tpem-seg {__version__} (backends: {', '.join(found) or 'none installed'})")
        raise typer.Exit()


@app.callback()
def _configure(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug"),
               version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                            help="print the version and the backends' versions")) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from tpem_seg.runtime.allocator import keep_freed_memory

    log.debug("malloc: %s", keep_freed_memory())


for _module in (segment, train, export, bioimageio, bench):  # the order of `tpem-seg --help`
    _module.register(app)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point. Typer handles usage errors (exit 2); user errors end here with exit 2;
    SIGTERM, SIGHUP and Ctrl-C with one line and 128 + the signal's number (143, 129, 130), after the
    writers have removed their partial files."""
    from tpem_seg.util.interrupts import Terminated, signals_as_exceptions

    try:
        with signals_as_exceptions():  # SIGTERM/SIGHUP/SIGINT unwind: partial files are removed
            app(args=argv)
    except TpemSegError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except Terminated as stop:
        typer.echo(f"error: {stop}; {stop.outcome}", err=True)
        sys.exit(stop.exit_code)
