"""Stop signals as exceptions: the block unwinds, handlers are restored, mangled errors are re-labelled."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tpem_seg.util.interrupts import STOP_SIGNALS, Terminated, signals_as_exceptions


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_signal_unwinds_the_block_and_restores_the_handler(signum):
    before = signal.getsignal(signum)
    cleaned = []
    with pytest.raises(Terminated) as stop:
        with signals_as_exceptions():
            try:
                os.kill(os.getpid(), signum)
                for _ in range(10**6):  # the handler runs between bytecodes
                    pass
            finally:
                cleaned.append(True)
    assert cleaned == [True]
    assert stop.value.signum == signum and stop.value.exit_code == 128 + signum
    assert str(stop.value) == f"stopped by {signal.Signals(signum).name}"
    assert signal.getsignal(signum) == before


def test_an_error_after_a_signal_is_reported_as_the_signal():
    # e.g. a C extension turning the signal's exception into an ImportError of its own.
    with pytest.raises(Terminated) as stop:
        with signals_as_exceptions():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10**6):
                    pass
            except Terminated as err:
                raise ImportError("initialization failed") from err
    assert isinstance(stop.value.__cause__, ImportError)


def test_errors_without_a_signal_pass_unchanged():
    with pytest.raises(ValueError):
        with signals_as_exceptions():
            raise ValueError("a bug")


def test_outside_the_main_thread_it_does_nothing():
    seen = []

    def body():
        with signals_as_exceptions():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]
