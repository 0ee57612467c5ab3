"""Errors a user can cause, and how the CLI tells them apart from bugs.

Every :class:`TpemSegError` carries a one-line message that names the problem
and the fix. The CLI prints it and exits with code 2, without a traceback.
Anything else that escapes is an internal failure (exit code 1).
"""

from __future__ import annotations


class TpemSegError(Exception):
    """A problem the user can fix (bad path, bad file, bad option...)."""


class InputError(TpemSegError):
    """The input volume cannot be read or cannot be segmented as given."""


class PackageError(TpemSegError):
    """A model package is missing, malformed, or fails its checksums."""


class OutputError(TpemSegError):
    """The output cannot be written where asked."""


class BackendUnavailable(TpemSegError):
    """The requested inference backend (or device) is not installed here."""


class ResumeError(TpemSegError):
    """A stopped run cannot be continued as asked (its settings, model or input differ)."""
