"""ORCA load reports on every answer, gRPC's weighted_round_robin and outlier detection
reading them, and the fault-injection knob the lab's failing pod uses.

Unit checks of the report's encoding, its window and the CPU limit it divides by; then
real calls: a plain client reads the trailer, and channels built by the runtime balance
between in-process servers by what the servers report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport

from shop.runtime.cgroupfs import CpuLimit, parse_mounts, parse_own_paths, quota_cores
from shop.runtime.channels import build_channel, service_config
from shop.runtime.config import (
    ChannelConfig,
    ConfigError,
    OutlierDetection,
    ServerConfig,
    WeightedRoundRobin,
)
from shop.runtime.metrics import RpcMetrics
from shop.runtime.orca import ORCA_TRAILER, WINDOW_S, LoadReporter, encode_load_report

from ..support.servers import WHO, StartServer, who_setup
from ..support.waiting import wait_until_async

BASE = ChannelConfig.from_env({})
FAST_OUTLIERS = OutlierDetection(
    interval_s=0.5,
    base_ejection_s=30,
    max_ejection_percent=50,
    failure_percent=50,
    min_hosts=2,
    request_volume=5,
)


def _report(trailers: Any) -> OrcaLoadReport | None:
    for key, value in trailers or ():
        if key == ORCA_TRAILER:
            return OrcaLoadReport.FromString(value)
    return None


# --- the report itself ------------------------------------------------------------------


def test_encoding_is_an_orca_load_report() -> None:
    report = OrcaLoadReport.FromString(encode_load_report(0.625, 812.5, 3.25))
    assert report.cpu_utilization == 0.625
    assert report.rps_fractional == 812.5
    assert report.eps == 3.25
    assert report.application_utilization == 0.0  # gRPC then weighs by cpu_utilization


class _Clocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 10.0


def _quota_files(tmp_path: Path, quota: str, period: str = "100000") -> Path:
    (tmp_path / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu.cfs_period_us").write_text(period + "\n")
    return tmp_path / "cpu.cfs_quota_us"


def test_report_covers_the_last_window(tmp_path: Path) -> None:
    clocks = _Clocks()
    limit = CpuLimit(_quota_files(tmp_path, "25000"))  # 250m
    reporter = LoadReporter(limit, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)
    # Nothing measured yet: no report rather than a guess.
    reporter.answered(None)
    assert reporter.report == b"" and reporter.trailers() == ()
    for code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
        reporter.answered(code)
    # Caller mistakes and business refusals are the same on every pod: not errors here.
    reporter.answered(grpc.StatusCode.INVALID_ARGUMENT)
    reporter.answered(grpc.StatusCode.FAILED_PRECONDITION)
    clocks.wall += 2.0
    clocks.cpu += 0.4  # 0.2 core over 2 s, at a 0.25-core limit
    reporter.answered(None)
    report = OrcaLoadReport.FromString(reporter.report)
    assert reporter.trailers() == ((ORCA_TRAILER, reporter.report),)
    assert report.cpu_utilization == pytest.approx(0.8)
    assert report.rps_fractional == pytest.approx(7 / 2.0)
    assert report.eps == pytest.approx(2 / 2.0)
    # Until the next window closes every answer carries these same bytes.
    clocks.wall += WINDOW_S / 2
    clocks.cpu += 1.0
    reporter.answered(None)
    assert OrcaLoadReport.FromString(reporter.report) == report
    # The next window starts where the last ended, and sees the quota as it is now.
    _quota_files(tmp_path, "50000")
    clocks.wall += WINDOW_S / 2
    reporter.answered(grpc.StatusCode.DATA_LOSS)
    report = OrcaLoadReport.FromString(reporter.report)
    assert report.cpu_utilization == pytest.approx(1.0 / WINDOW_S / 0.5)
    assert report.rps_fractional == pytest.approx(2 / WINDOW_S)
    assert report.eps == pytest.approx(1 / WINDOW_S)


@pytest.mark.parametrize(
    ("name", "text", "cores"),
    [
        ("cpu.max", "25000 100000\n", 0.25),
        ("cpu.max", "150000 100000\n", 1.5),
        ("cpu.max", "max 100000\n", None),
        ("cpu.cfs_quota_us", "-1\n", None),
        ("cpu.cfs_quota_us", "50000\n", 0.5),
    ],
)
def test_quota_cores_reads_both_cgroup_versions(
    tmp_path: Path, name: str, text: str, cores: float | None
) -> None:
    (tmp_path / name).write_text(text)
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert quota_cores(tmp_path / name) == cores


def test_cpu_limit_without_quota_is_the_usable_cores(tmp_path: Path) -> None:
    usable = CpuLimit(None, find=False).cores()
    assert usable >= 1
    assert CpuLimit(_quota_files(tmp_path, "-1")).cores() == usable
    # More quota than cores cannot be used.
    assert CpuLimit(_quota_files(tmp_path, str(int(usable + 4) * 100_000))).cores() == usable


def test_own_cgroup_paths_are_found_in_proc_files() -> None:
    mountinfo = (
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "32 31 0:29 /kubepods /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "40 31 0:37 / /sys/fs/unified rw - cgroup2 cgroup2 rw\n"
    )
    mounts = parse_mounts(mountinfo)
    assert [(str(m.point), m.root, m.fstype) for m in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", "/kubepods", "cgroup"),
        ("/sys/fs/unified", "/", "cgroup2"),
    ]
    assert "cpu" in mounts[0].options
    assert parse_own_paths("4:cpu,cpuacct:/kubepods/pod1\n0::/app\n") == {
        "cpu": "/kubepods/pod1",
        "cpuacct": "/kubepods/pod1",
        "": "/app",
    }


# --- settings ---------------------------------------------------------------------------


def test_balancing_settings_are_read() -> None:
    config = ChannelConfig.from_env(
        {
            "SHOP_LB_POLICY": "weighted_round_robin",
            "SHOP_WRR_BLACKOUT_S": "1.5",
            "SHOP_WRR_ERROR_PENALTY": "2",
            "SHOP_OUTLIER_DETECTION": "true",
            "SHOP_OUTLIER_INTERVAL_S": "0.5",
            "SHOP_OUTLIER_BASE_EJECTION_S": "30",
            "SHOP_OUTLIER_MAX_EJECTION_PERCENT": "50",
            "SHOP_OUTLIER_FAILURE_PERCENT": "50",
            "SHOP_OUTLIER_MIN_HOSTS": "2",
            "SHOP_OUTLIER_REQUEST_VOLUME": "5",
        }
    )
    assert config.lb_policy == "weighted_round_robin"
    assert config.wrr == WeightedRoundRobin(blackout_s=1.5, error_penalty=2.0)
    assert config.outlier_detection == FAST_OUTLIERS
    # Off by default, whatever its numbers say.
    assert ChannelConfig.from_env({"SHOP_OUTLIER_MIN_HOSTS": "2"}).outlier_detection is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHOP_LB_POLICY", "least_request"),
        ("SHOP_WRR_BLACKOUT_S", "-1"),
        ("SHOP_OUTLIER_MAX_EJECTION_PERCENT", "150"),
        ("SHOP_OUTLIER_FAILURE_PERCENT", "-5"),
        ("SHOP_OUTLIER_MIN_HOSTS", "0"),
        ("SHOP_OUTLIER_INTERVAL_S", "0"),
    ],
)
def test_bad_balancing_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        ChannelConfig.from_env({name: value, "SHOP_OUTLIER_DETECTION": "true"})


@pytest.mark.parametrize("value", ["OK", "BROKEN", "unavailable!"])
def test_bad_fault_status_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^SHOP_FAULT_STATUS="):
        ServerConfig.from_env({"SHOP_FAULT_STATUS": value})


def test_fault_status_and_reports_are_read() -> None:
    assert ServerConfig.from_env({}).fault_status is None
    assert ServerConfig.from_env({}).orca_reports is True
    config = ServerConfig.from_env({"SHOP_FAULT_STATUS": "unavailable", "SHOP_ORCA_REPORTS": "0"})
    assert config.fault_status is grpc.StatusCode.UNAVAILABLE
    assert config.orca_reports is False


def test_weighted_round_robin_service_config() -> None:
    config = dataclasses.replace(
        BASE, lb_policy="weighted_round_robin", wrr=WeightedRoundRobin(0.25, 1.0)
    )
    document = service_config(config, "dns:///inventory:50051", "shop.v1.Inventory")
    assert document["loadBalancingConfig"] == [
        {"weighted_round_robin": {"blackoutPeriod": "0.25s", "errorUtilizationPenalty": 1.0}}
    ]
    # Health checking skips a draining pod under either round robin.
    assert document["healthCheckConfig"] == {"serviceName": "shop.v1.Inventory"}


def test_outlier_detection_wraps_the_policy() -> None:
    config = dataclasses.replace(BASE, outlier_detection=FAST_OUTLIERS)
    document = service_config(config, "dns:///inventory:50051", "shop.v1.Inventory")
    assert document["loadBalancingConfig"] == [
        {
            "outlier_detection_experimental": {
                "interval": "0.5s",
                "baseEjectionTime": "30s",
                "maxEjectionPercent": 50,
                "failurePercentageEjection": {
                    "threshold": 50,
                    "enforcementPercentage": 100,
                    "minimumHosts": 2,
                    "requestVolume": 5,
                },
                "childPolicy": [{"round_robin": {}}],
            }
        }
    ]


# --- real calls -------------------------------------------------------------------------


# gRPC's C core takes ``endpoint-load-metrics-bin`` out of the trailers it hands to the
# application (it is the balancer's), so a Python client cannot read the report: these
# tests see it through what gRPC's balancing does with it, and tests/e2e reads it with
# grpcurl (a Go client, which shows every trailer).


async def test_failed_calls_keep_their_error_details(start_server: StartServer) -> None:
    """The report is added to a failed call's trailers, not put in their place."""
    server = await start_server("who", who_setup())
    async with grpc.aio.insecure_channel(server.address) as channel:
        who = channel.unary_unary(f"/{WHO}/Who")
        deadline = time.monotonic() + WINDOW_S + 0.2
        while time.monotonic() < deadline:  # past the first window: reports are on
            assert await who(b"") == b"who-0"
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await who(b"invalid")
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(failed.value)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert bad_request.field_violations[0].field == "request"


async def test_fault_injection_fails_calls_but_not_health(start_server: StartServer) -> None:
    # start_server waits for health SERVING: health is untouched by the fault.
    server = await start_server("who", who_setup(), fault_status=grpc.StatusCode.UNAVAILABLE)
    async with grpc.aio.insecure_channel(server.address) as channel:
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await channel.unary_unary(f"/{WHO}/Who")(b"")
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "SHOP_FAULT_STATUS=UNAVAILABLE" in (failed.value.details() or "")


def _channel(servers: Sequence[str], config: ChannelConfig) -> grpc.aio.Channel:
    return build_channel(
        "ipv4:" + ",".join(servers), config, WHO, RpcMetrics.create("client", "client-0"), None
    )


async def _attempts(channel: grpc.aio.Channel, calls: int) -> Counter[str]:
    """Which server answered each call: its pod name, or the status it failed with."""
    who = channel.unary_unary(f"/{WHO}/Who")
    seen: Counter[str] = Counter()
    for _ in range(calls):
        try:
            seen[(await who(b"", timeout=5)).decode()] += 1
        except grpc.aio.AioRpcError as error:
            seen[error.code().name] += 1
    return seen


# One attempt per call, so each failure is a pick of the failing server.
NO_RETRIES = dataclasses.replace(BASE, retry_max_attempts=1)


@pytest.mark.parametrize("reports", [True, False], ids=["reports", "no-reports"])
async def test_weighted_round_robin_moves_calls_off_a_failing_server(
    start_server: StartServer, reports: bool
) -> None:
    """The failing server reports as many errors/s as calls/s; gRPC's weight for it
    falls to rps / (utilization + 1), against rps / utilization for the healthy one.
    Both run in this process and so report the same utilization u: the failing one's
    share settles at u / (2u + 1), under a third for any u <= 1, where round_robin
    keeps it at a half. Without reports the policy has no weights and stays even:
    the reports are what moves the calls."""
    healthy = await start_server("healthy", who_setup(), pod_name="healthy-0", orca_reports=reports)
    failing = await start_server(
        "failing",
        who_setup(),
        pod_name="failing-0",
        fault_status=grpc.StatusCode.UNAVAILABLE,
        orca_reports=reports,
    )
    addresses = [healthy.address, failing.address]
    async with _channel(addresses, NO_RETRIES) as channel:
        await _attempts(channel, 40)  # both connected and past the report window
        assert (await _attempts(channel, 100))["UNAVAILABLE"] == 50
    wrr = dataclasses.replace(
        NO_RETRIES, lb_policy="weighted_round_robin", wrr=WeightedRoundRobin(0.0, 1.0)
    )
    async with _channel(addresses, wrr) as channel:
        if reports:

            async def weighed() -> bool:
                return (await _attempts(channel, 100))["UNAVAILABLE"] <= 40

            await wait_until_async(weighed, "the failing server's share under 40%", 20)
        else:
            # Several report windows and weight updates long: still even (the policy's
            # scheduler starts each round at a random backend: not to the call).
            failed: list[int] = []
            deadline = time.monotonic() + 3 * WINDOW_S
            while time.monotonic() < deadline:
                failed.append((await _attempts(channel, 100))["UNAVAILABLE"])
            assert all(45 <= n <= 55 for n in failed), failed


@pytest.mark.parametrize("policy", ["round_robin", "weighted_round_robin"])
async def test_outlier_detection_ejects_a_failing_server(
    start_server: StartServer, policy: str
) -> None:
    healthy = await start_server("healthy", who_setup(), pod_name="healthy-0")
    failing = await start_server(
        "failing", who_setup(), pod_name="failing-0", fault_status=grpc.StatusCode.UNAVAILABLE
    )
    config = dataclasses.replace(NO_RETRIES, lb_policy=policy, outlier_detection=FAST_OUTLIERS)
    document = json.dumps(service_config(config, "ipv4:x", WHO))
    async with _channel([healthy.address, failing.address], config) as channel:

        async def ejected() -> bool:
            return await _attempts(channel, 30) == {"healthy-0": 30}

        await wait_until_async(ejected, f"the failing server ejected under {document}", 20)
