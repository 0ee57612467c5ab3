"""The exceptions of tpem_seg_cpp, one per libtpem status (tpem_status in tpem.h)."""

from __future__ import annotations


class Error(RuntimeError):
    """A libtpem call failed; ``status`` is its ``tpem_status`` name, the message says the fix."""

    status = "TPEM_ERR_INTERNAL"


class InvalidArgument(Error, ValueError):
    status = "TPEM_ERR_INVALID_ARGUMENT"


class IOFailure(Error, OSError):
    status = "TPEM_ERR_IO"


class PackageError(Error):
    status = "TPEM_ERR_PACKAGE"


class BackendError(Error):
    status = "TPEM_ERR_BACKEND"


class BufferTooSmall(Error):
    status = "TPEM_ERR_BUFFER_TOO_SMALL"


class Cancelled(Error):
    status = "TPEM_ERR_CANCELLED"


_BY_STATUS = {1: InvalidArgument, 2: IOFailure, 3: PackageError, 4: BackendError, 5: BufferTooSmall, 6: Cancelled}


def error_for(status: int, message: str) -> Error:
    """The exception for a ``tpem_status`` value (called by the binding)."""
    return _BY_STATUS.get(status, Error)(message)
