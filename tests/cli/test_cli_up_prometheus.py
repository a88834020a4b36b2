"""``shop up --prometheus``: a real Prometheus scrapes every replica with the chart's rules."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from shop.local.addresses import free_net


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]


def test_up_with_prometheus(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "shop.cli.main", "up", "--prometheus", "--net", str(free_net()),
        "--gateway", "1", "--orders", "1", "--inventory", "1", "--data-dir", str(tmp_path),
    ]  # fmt: skip
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"}
        )
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            match = re.search(r"prometheus: (http://127\.0\.0\.1:\d+)", log.read_text())
            url = match[1] if match else None
            time.sleep(0.2)
        while True:  # every replica scraped (first scrapes land within a second or two)
            targets = _get(f"{url}/api/v1/targets")["activeTargets"]
            if sum(t["health"] == "up" for t in targets) == 3:
                break
            assert time.monotonic() < deadline, targets
            time.sleep(0.25)
        assert {t["labels"]["job"] for t in targets} == {"gateway", "orders", "inventory"}
        groups = {g["name"] for g in _get(f"{url}/api/v1/rules")["groups"]}
        assert "grpc-shop.balancing" in groups
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        # Prometheus went with it.
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=2)
            raise AssertionError("prometheus still answering after shop up stopped")
        except OSError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_up_without_rule_files_names_the_flag(tmp_path: Path) -> None:
    """An installed ``shop`` cannot find a checkout: no rule files is an error naming
    --rules, before any replica starts, not a Prometheus without the chart's rules."""
    command = [
        sys.executable, "-m", "shop.cli.main", "up", "--prometheus", "--net", str(free_net()),
        "--data-dir", str(tmp_path / "data"), "--rules", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--rules" in result.stderr and str(tmp_path) in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()
