"""The progress bar over a whole benchmark plan (stderr, so ``--json`` output stays clean).

A run takes minutes; the bar says which configuration and round is on, and how
far through the plan the run is, advancing smoothly inside each measurement.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class PlanProgress:
    """Counts measurements; ``tick`` moves the bar inside the current one."""

    def __init__(self, measurements: int, enabled: bool, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[step]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
            transient=True,
        )
        self._measurements = measurements
        self._task: TaskID = self._progress.add_task(
            "starting servers", total=measurements, step=""
        )
        self._index = 0

    def phase(self, description: str) -> None:
        self._progress.update(self._task, description=description)

    def measuring(self, index: int, title: str, round_number: int, rounds: int) -> None:
        self._index = index
        self._progress.update(
            self._task,
            completed=index,
            description=f"{title} (round {round_number}/{rounds})",
            step=f"{index + 1}/{self._measurements}",
        )

    def tick(self, fraction: float) -> None:
        """``fraction`` of the current measurement is done (capped below the next one)."""
        self._progress.update(self._task, completed=self._index + min(max(fraction, 0.0), 0.99))

    def finished(self) -> None:
        self._progress.update(self._task, completed=self._measurements)

    def __enter__(self) -> PlanProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()
