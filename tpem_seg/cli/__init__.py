"""The ``tpem-seg`` command line: a thin face over the Python API.

Each part's commands live in a module here (:mod:`~tpem_seg.cli.segment`, :mod:`~tpem_seg.cli.train`,
:mod:`~tpem_seg.cli.export`, :mod:`~tpem_seg.cli.bench`), above every layer they call, and import
their heavy libraries inside the command bodies. The console script is ``tpem_seg.cli:main``;
``python -m tpem_seg.cli`` runs the same.
"""

from tpem_seg.cli.root import app, main

__all__ = ["app", "main"]
