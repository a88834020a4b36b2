"""Bad flags of ``shop load`` and ``shop demo``: exit code 2 and the flag named.

Argument parsing happens before anything starts, so these run in-process; the
unreachable-target case runs the real command, because its promise is about what a
user sees (one line, no traceback).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from shop.cli.main import main


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["load", "--concurrency", "0"], "--concurrency"),
        (["load", "--concurrency", "many"], "--concurrency"),
        (["load", "--rps", "-5"], "--rps"),
        (["load", "--rps", "10", "--concurrency", "4"], "--concurrency"),
        (["load", "--duration", "0"], "--duration"),
        (["load", "--warmup", "-1"], "--warmup"),
        (["load", "--timeout", "soon"], "--timeout"),
        (["load", "--channels", "0"], "--channels"),
        (["load", "--lb-policy", "random"], "--lb-policy"),
        (["load", "--workload", "browse"], "--workload"),
        (["load", "--max-in-flight", "10"], "--max-in-flight"),  # closed loop: no meaning
        (["load", "--rps", "10", "--max-in-flight", "0"], "--max-in-flight"),
        (["load", "--expect", "orders"], "--expect"),
        (["load", "--expect", "orders=0"], "--expect"),
        (["load", "--token-key", "/nonexistent/issuer-key.pem"], "--token-key"),
        (["load", "--token-key", "issuer-key.pem", "--token", "a.b.c"], "--token"),
        (["demo", "--duration", "-3"], "--duration"),
        (["demo", "--orders", "0"], "--orders"),
        (["demo", "--max-in-flight", "5"], "--max-in-flight"),
    ],
)
def test_bad_flag_is_named(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err


def test_unreachable_target_is_one_clear_line() -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "shop.cli.main", "load", "--target", "127.0.0.1:1"),
            *("--timeout", "0.5", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("shop load: cannot connect to 127.0.0.1:1")
