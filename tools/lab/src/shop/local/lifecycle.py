"""``with`` for what starts several processes (a local cluster, the bench's testbed).

Entering starts it; if starting fails half-way, what did start is stopped before the
error goes on (a replica that came up before another failed must not outlive the
error). Leaving stops it, whatever happened inside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class StartStop(ABC):
    @abstractmethod
    def start(self) -> None:
        """Starts everything; may fail half-way."""

    @abstractmethod
    def stop(self) -> object:
        """Stops whatever runs; safe after a start that failed half-way."""

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
