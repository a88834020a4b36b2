"""A real Prometheus (the Debian package's binary) scraping the shop on loopback.

Used by ``shop up --prometheus`` and by the tests that run every dashboard and rule
expression against live data. It loads the same rule files the Helm chart and the
docker-compose stack use, and keeps exemplars so latency panels can link to traces.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shop.local.addresses import free_port


class PrometheusUnavailable(RuntimeError):
    """The binary is missing or the server did not become ready."""


class QueryError(RuntimeError):
    """Prometheus refused a query (e.g. a PromQL parse error)."""


def scrape_config(
    targets: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path] = (),
    scrape_interval_s: float = 1.0,
) -> dict[str, Any]:
    """A prometheus.yml: one job per service, each replica's metrics address a target."""
    interval = f"{scrape_interval_s:g}s"
    return {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            # A loaded 2-core machine answers a scrape slowly; do not drop the target.
            "scrape_timeout": interval,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in targets.items()
        ],
    }


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result vector (or a one-element list for a scalar)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        rows: list[dict[str, Any]] = result
        return rows

    def targets_up(self) -> int:
        data = self._get("/api/v1/targets", {"state": "active"})
        return sum(1 for t in data["activeTargets"] if t["health"] == "up")

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules", {})["groups"]
        return groups

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_prometheus(
    workdir: Path,
    targets: Mapping[str, Sequence[str]],
    rule_files: Sequence[Path] = (),
    *,
    host: str = "127.0.0.1",
    scrape_interval_s: float = 1.0,
    timeout_s: float = 30.0,
) -> PrometheusServer:
    """Starts Prometheus on a free loopback port; returns once it answers /-/ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusUnavailable(
            "the `prometheus` binary is not on PATH: install the Debian package "
            "`prometheus` (`make sysdeps` does it as root)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    # JSON is YAML: no YAML library needed at run time.
    config_path.write_text(json.dumps(scrape_config(targets, rule_files, scrape_interval_s)))
    port = free_port(host)
    url = f"http://{host}:{port}"
    log_path = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={host}:{port}",
        # Exemplars (trace ids on latency buckets) let Grafana link a slow bucket to a trace.
        "--enable-feature=exemplar-storage",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = PrometheusServer(url, process, log_path)
    deadline = time.monotonic() + timeout_s
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise PrometheusUnavailable(f"prometheus did not become ready on {url}:\n{tail}")
        time.sleep(0.05)
    return server
