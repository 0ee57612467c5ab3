"""Errors a user can cause while exporting: each a one-line message naming the fix (CLI exit code 2)."""

from __future__ import annotations

from tpem_seg.errors import TpemSegError


class ExportError(TpemSegError):
    """The checkpoint, its architecture options or the exported graph are not usable."""


class ParityError(ExportError):
    """The exported graph (or an engine) does not reproduce the reference within tolerance."""
