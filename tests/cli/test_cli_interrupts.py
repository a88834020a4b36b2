"""SIGTERM and SIGHUP stop demo, lab and bench the way Ctrl-C does."""

from __future__ import annotations

import os
import signal

import pytest

from shop.cli.interrupts import STOP_SIGNALS, stop_signals_interrupt


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_raises_keyboard_interrupt_inside_and_not_after(sig: int) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt), stop_signals_interrupt():
        os.kill(os.getpid(), sig)
    assert signal.getsignal(sig) is before
