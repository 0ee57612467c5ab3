"""SIGTERM, SIGHUP and SIGINT as one exception, so that a stopped run always cleans up.

Python ends a process on SIGTERM or SIGHUP without unwinding the stack, so no
``finally`` runs and writers leave their temporary files behind; Ctrl-C's
KeyboardInterrupt, raised inside a C extension, may come out as another error.
Inside :func:`signals_as_exceptions` the three raise :class:`Terminated` in the
main thread instead: context managers unwind (writers abort and remove their
partial files) and the command line exits with ``128 + signal`` (143, 129, 130),
the shell's convention. SIGKILL cannot be caught; see :mod:`tpem_seg.util.partials` for the
clean-up of what it leaves.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

#: Signals that stop a run politely: ``kill``, a closed terminal or SSH session, Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class Terminated(BaseException):
    """A stop signal arrived. Like KeyboardInterrupt, not an ``Exception``: nothing may swallow it.

    Attributes:
        signum: the signal's number.
        outcome: what happened to the run's output, for the closing line (a resumable run keeps it).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.outcome = "partial output removed"

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.name}"


#: Signals received inside :func:`signals_as_exceptions` (main thread only).
_received: list[int] = []


def _raise(signum: int, frame: object) -> None:
    if _received:
        return  # already stopping: a second Ctrl-C must not cut the clean-up short
    _received.append(signum)
    raise Terminated(signum)


@contextlib.contextmanager
def signals_as_exceptions(signums: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Raise :class:`Terminated` in the main thread on ``signums`` while the block runs.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    The previous handlers are restored afterwards. A signal that lands inside a C extension
    can come out as that extension's own error (e.g. an ``ImportError`` from a module being
    initialised); once a stop signal has arrived, any error leaving the block is re-raised as
    :class:`Terminated`, chained to it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _raise) for s in signums}
    try:
        yield
    except Exception as err:
        if not _received:
            raise
        raise Terminated(_received[0]) from err
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
