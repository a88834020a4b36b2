"""The end of a process's log file, for error messages about that process."""

from __future__ import annotations

from pathlib import Path


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of ``path``; "(no log)" if it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
