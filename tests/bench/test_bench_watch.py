"""``python -m shop.bench.watch``, the README's stream-cost command, runs and reports.

A smoke run with a handful of streams: the figures are the README's to quote, the
test checks that the command opens every stream it asked for and reports each
figure, so the documented command cannot rot.
"""

from __future__ import annotations

import json
import subprocess
import sys


def test_the_stream_cost_command_opens_its_streams_and_reports() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shop.bench.watch", "--streams", "4", "--window", "1"],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert (report["streams_requested"], report["streams_open"], report["refused"]) == (4, 4, [])
    for phase in ("idle_no_streams", "idle_watching"):
        assert set(report[phase]) == {"orders_cpu_s_per_s", "probe"}, report[phase]
    assert set(report["rss_kib_per_stream"]) == {"gateway", "orders"}
