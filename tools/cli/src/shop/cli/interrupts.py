"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

Commands that start replicas (demo, lab, bench) unwind on KeyboardInterrupt and
stop every process they started on the way out. Replicas run in sessions of their
own (so a terminal's Ctrl-C reaches only the command), which also means a closed
terminal's SIGHUP reaches only the command: it must stop the shop too, or the
replicas would outlive it. A CI runner's SIGTERM does the same.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

Handler = Callable[[int, FrameType | None], object]


@contextmanager
def signals_handled_by(signals: Iterable[signal.Signals], handler: Handler) -> Iterator[None]:
    """``handler`` for ``signals`` while the block runs; the previous handlers after it."""
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, earlier in previous.items():
            signal.signal(sig, earlier)


def stop_signals_interrupt() -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt while the block runs."""
    return signals_handled_by(STOP_SIGNALS, signal.default_int_handler)
