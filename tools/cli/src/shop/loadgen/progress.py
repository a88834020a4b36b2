"""A live progress bar for a load run, on stderr so ``--json`` stdout stays clean.

It is refreshed from the event loop by polling :meth:`Runner.snapshot` a few times a
second; the runner itself never touches the terminal, which keeps per-call work
small and lets tests run the runner without any display.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

from shop.loadgen.runner import Runner

REFRESH_S = 0.25


def progress_wanted(disabled_by_flag: bool) -> bool:
    """Shown only to a person: not with --no-progress, not when stderr is a pipe or file."""
    return not disabled_by_flag and sys.stderr.isatty()


@contextlib.asynccontextmanager
async def live_progress(runner: Runner, enabled: bool, label: str) -> AsyncIterator[None]:
    """Shows a bar over warm-up + duration while the body runs ``runner``."""
    if not enabled:
        yield
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[calls]:>8} calls"),
        TextColumn("{task.fields[rate]:>8.0f}/s"),
        TextColumn("{task.fields[errors]} errors"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    total = runner.plan.total_s
    task = progress.add_task(f"{label} warmup", total=total, calls=0, rate=0.0, errors=0)

    async def refresh() -> None:
        while True:
            snap = runner.snapshot()
            measured_s = min(snap.elapsed_s - runner.plan.warmup_s, runner.plan.duration_s)
            measured_s = max(measured_s, 1e-9)
            rate = snap.calls / measured_s if snap.phase != "warmup" else 0.0
            progress.update(
                task,
                completed=min(snap.elapsed_s, total),
                description=f"{label} {snap.phase}",
                calls=snap.calls,
                rate=rate,
                errors=snap.errors,
            )
            await asyncio.sleep(REFRESH_S)

    with progress:
        ticker = asyncio.create_task(refresh())
        try:
            yield
        finally:
            ticker.cancel()
            # wait() rather than awaiting the task: its CancelledError must not be
            # confused with a cancellation of this task (Ctrl-C).
            await asyncio.wait({ticker})
