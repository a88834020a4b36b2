"""A Node.js gRPC client in the lab: which pod answers each of its calls.

``tools/node-client/shares.js`` is ``@grpc/grpc-js`` with the snippet Node users copy
to fix balancing behind a headless Service: the service config
``{"loadBalancingConfig": [{"round_robin": {}}]}`` as the ``grpc.service_config``
channel option (and ``@grpc/grpc-js-xds`` registered for ``xds:///`` targets). It makes
a fixed number of ``grpc.health.v1.Health/Check`` calls and counts the pods named by
each answer's ``shop-route`` trailer, so the lab can measure a Node client's per-pod
shares in headless and proxyless mode as it does a Python client's.

Its packages are installed by ``npm ci --prefix tools/node-client`` (``make venv`` does
it); :func:`node_available` says what is missing before a run would fail on it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shop.lab.results import counts_from_json

INSTALL_COMMAND = "npm ci --prefix tools/node-client --no-audit --no-fund"
# shares.js stops itself at its --timeout-s; this much longer and it is killed.
_KILL_GRACE_S = 10.0
_TAIL_CHARS = 1500


@dataclass(frozen=True)
class NodeShares:
    """What one ``shares.js`` run reported."""

    target: str
    calls: int
    ok: int
    failures: int
    status_counts: dict[str, int]  # status code name -> calls
    per_pod: dict[str, int]  # pod -> OK calls it answered
    elapsed_s: float
    # A few failed calls' "STATUS: details" -> count (what went wrong, for a report).
    errors: dict[str, int] = field(default_factory=dict)
    warmup_calls: int = 0  # uncounted calls made first (``warmup_pods``)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> NodeShares:
        return cls(
            target=str(raw["target"]),
            calls=int(raw["calls"]),
            ok=int(raw["ok"]),
            failures=int(raw["failures"]),
            status_counts=counts_from_json(raw["status_counts"]),
            per_pod=counts_from_json(raw["per_pod"]),
            elapsed_s=float(raw["elapsed_s"]),
            errors=counts_from_json(raw.get("errors", {})),
            warmup_calls=int(raw.get("warmup_calls", 0)),
        )


def node_client_dir() -> Path:
    """``tools/node-client`` of this checkout (the lab is installed editable)."""
    # tools/lab/src/shop/lab/node_client.py -> tools/
    return Path(__file__).resolve().parents[4] / "node-client"


def node_available() -> str | None:
    """None if ``node`` is on PATH and shares.js's pinned packages are installed; else
    what is missing and how to install it."""
    directory = node_client_dir()
    if not (directory / "shares.js").is_file():
        return f"no Node.js client at {directory} (shares.js missing)"
    if shutil.which("node") is None:
        return "node (Node.js 18 or later) is not on PATH: install Node.js, then " + INSTALL_COMMAND
    wanted: dict[str, str] = json.loads((directory / "package.json").read_text())["dependencies"]
    for name, version in sorted(wanted.items()):
        installed = directory / "node_modules" / name / "package.json"
        if not installed.is_file():
            return f"{name} is not installed in {directory / 'node_modules'}: run {INSTALL_COMMAND}"
        found = json.loads(installed.read_text()).get("version")
        if found != version:
            return (
                f"{name} {found} is installed, package.json pins {version}: run {INSTALL_COMMAND}"
            )
    return None


def node_command(
    target: str,
    calls: int,
    concurrency: int,
    *,
    timeout_s: float = 60,
    deadline_ms: int = 5000,
    warmup_pods: int = 0,
    service_config: bool = True,
) -> list[str]:
    """The ``node shares.js`` command line for one run."""
    node = shutil.which("node") or "node"
    command = [
        node, str(node_client_dir() / "shares.js"), "--target", target,
        "--calls", str(calls), "--concurrency", str(concurrency),
        "--deadline-ms", str(deadline_ms), "--timeout-s", str(timeout_s),
        "--warmup-pods", str(warmup_pods),
    ]  # fmt: skip
    if not service_config:
        command.append("--no-service-config")
    return command


async def run_node_shares(
    target: str,
    calls: int,
    concurrency: int,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60,
    *,
    deadline_ms: int = 5000,
    warmup_pods: int = 0,
    service_config: bool = True,
) -> NodeShares:
    """Runs ``shares.js``: ``calls`` Health/Check calls to ``target``, ``concurrency``
    in flight, each with a ``deadline_ms`` deadline.

    ``env`` is added to this process's environment (``GRPC_XDS_BOOTSTRAP`` for an
    ``xds:///`` target, ``GRPC_TRACE``...). ``service_config=False`` leaves the
    round_robin snippet out (grpc-js then uses pick_first). ``warmup_pods=K`` makes
    uncounted calls first, one at a time, until K pods have answered: a cold channel's
    first ``concurrency`` calls wait for its first READY subchannel and all go to that
    pod, which a short run would report as imbalance. The run stops itself after
    ``timeout_s`` (a RuntimeError), and is killed if it has not exited shortly after,
    or if this coroutine is cancelled. A non-zero exit raises RuntimeError with the
    end of its stderr.
    """
    problem = node_available()
    if problem is not None:
        raise RuntimeError(problem)
    command = node_command(
        target,
        calls,
        concurrency,
        timeout_s=timeout_s,
        deadline_ms=deadline_ms,
        warmup_pods=warmup_pods,
        service_config=service_config,
    )
    full_env = {
        **os.environ,
        **(env or {}),
        # grpc-js honours the DNS server of a dns://HOST:PORT/ target (the lab's cluster
        # DNS) only with its c-ares-like resolver; the default asks getaddrinfo.
        "GRPC_NODE_USE_ALTERNATIVE_RESOLVER": "true",
    }
    # subprocess.Popen, not the event loop's subprocess support: the lab runs on uvloop,
    # which spawns with fork() and so runs gRPC's fork handlers in the child while this
    # process has gRPC threads busy (see shop.lab.load).
    process = await asyncio.to_thread(
        subprocess.Popen,
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=node_client_dir(),
    )
    try:
        try:
            stdout, stderr = await asyncio.to_thread(
                process.communicate, None, timeout_s + _KILL_GRACE_S
            )
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = await asyncio.to_thread(process.communicate)
            raise RuntimeError(
                f"node shares.js did not stop after {timeout_s + _KILL_GRACE_S:g} s and was "
                f"killed: {_tail(stderr)}"
            ) from None
    finally:
        # Also on cancellation: the thread blocked in communicate() returns once the
        # process is gone and its pipes close.
        if process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.wait)
    if process.returncode != 0:
        # On its own timeout it still prints what it saw (the errors say why).
        report = f"; it reported {_tail(stdout)}" if stdout.strip() else ""
        raise RuntimeError(f"node shares.js exited {process.returncode}: {_tail(stderr)}{report}")
    try:
        return NodeShares.from_json(json.loads(stdout))
    except (ValueError, KeyError, TypeError) as error:
        raise RuntimeError(f"node shares.js printed no report ({error}): {_tail(stdout)}") from None


def _tail(output: bytes) -> str:
    return output.decode(errors="replace").strip()[-_TAIL_CHARS:]
