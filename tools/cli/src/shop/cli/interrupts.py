"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

Commands that start replicas (demo, lab, bench) unwind on KeyboardInterrupt and
stop every process they started on the way out. Replicas run in sessions of their
own (so a terminal's Ctrl-C reaches only the command), which also means a closed
terminal's SIGHUP reaches only the command: it must stop the shop too, or the
replicas would outlive it. A CI runner's SIGTERM does the same.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
