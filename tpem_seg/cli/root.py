"""The ``tpem-seg`` app: logging set-up, the command modules, and how errors end.

User errors (:class:`~tpem_seg.errors.TpemSegError`) end with one line on
stderr and exit code 2; Ctrl-C leaves no partial output; anything else is a
bug and exits 1 with its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from tpem_seg.cli import bench, export, segment, train
from tpem_seg.errors import TpemSegError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Segment 3D two-photon microscopy: vessels and neurons, fast, from few labels.")
log = logging.getLogger("tpem_seg")


@app.callback()
def _configure(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v info, -vv debug")) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from tpem_seg.runtime.allocator import keep_freed_memory

    log.debug("malloc: %s", keep_freed_memory())


for _module in (segment, train, export, bench):  # the order of `tpem-seg --help`
    _module.register(app)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point. Typer handles usage errors (exit 2) and Ctrl-C ("Aborted!", exit 1,
    after the writers have removed their partial files); user errors end here with exit 2."""
    try:
        app(args=argv)
    except TpemSegError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
