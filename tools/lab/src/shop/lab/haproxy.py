"""A real HAProxy, driven from Python, standing in for kube-proxy at a service IP.

kube-proxy balances a ClusterIP Service per TCP *connection*; so does HAProxy in TCP
mode with ``balance roundrobin``. A gRPC channel opens one connection, so all its calls
land on one pod: the problem the lab measures, reproduced. HAProxy is a Debian package
that runs as a plain process and changes its backend set at run time. (The ``istio``
mode runs real Envoy sidecars, see :mod:`shop.lab.envoy`; HAProxy plays no sidecar.)

Endpoint changes never restart the process. Each backend has ``max_backends`` server
slots declared up front, all in maintenance; :meth:`HAProxy.publish` points slots at
pods and moves them between ``ready``, ``drain`` and ``maint`` through the runtime API
(a stats socket in the work directory). A removed pod is *drained*: no new connection
is balanced to it while the connections it is serving stay open, as kube-proxy leaves
established connections alone. HAProxy runs no health checks of its own: membership is
decided by whoever publishes (the lab's readiness tracker), as the endpoints controller
decides for kube-proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import ipaddress
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shop.lab import proxy_process
from shop.lab.endpoints import Endpoint
from shop.local.logs import log_tail

log = logging.getLogger(__name__)

SlotState = Literal["maint", "ready", "drain"]

# Where a slot points while unused: never connected to, since the slot is in maint.
_PLACEHOLDER = "127.0.0.1:9"
# A unix socket path must fit in sockaddr_un (108 bytes), with the ".<pid>.tmp" HAProxy
# binds first and renames.
_MAX_SOCKET_PATH = 90
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class HAProxyError(RuntimeError):
    """HAProxy is missing, failed to start, or refused a runtime command."""


def haproxy_binary() -> str:
    """The path of the ``haproxy`` program; raises :class:`HAProxyError` saying how to
    install it when it is absent (it lives in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("haproxy")
    if found:
        return found
    for candidate in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise HAProxyError(
        "haproxy is not installed; the balancing lab needs it: run "
        "`sudo apt-get install haproxy` (or `python -m shop.local.sysdeps --install`)"
    )


@dataclass(frozen=True)
class _Usage:
    """One slot's load: client connections being served, and connections to the pod."""

    sessions: int
    connections: int

    @property
    def idle(self) -> bool:
        return self.sessions == 0 and self.connections == 0


@dataclass
class _Slot:
    """One declared server of a backend and what it currently points at."""

    server: str
    endpoint: Endpoint | None = None
    state: SlotState = "maint"


def _split_listener(service: str, listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not 0 < port < 65536:
        raise ValueError(f"listener of {service!r} must be 'ipv4:port', got {listen!r}")
    return host, port


class HAProxy:
    """One HAProxy process in TCP mode: a frontend per service, at its service IP.

    ``listeners`` maps each service to the ``ip:port`` where its frontend listens.
    Implements :class:`shop.lab.endpoints.EndpointPublisher`; endpoints published
    before :meth:`start` are applied once the process is up.
    """

    def __init__(
        self,
        name: str,
        work_dir: Path,
        listeners: Mapping[str, str],
        max_backends: int = 8,
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"proxy name must be letters, digits, '_', '.', '-': {name!r}")
        if not listeners:
            raise ValueError("a proxy needs at least one listener")
        if not 1 <= max_backends <= 1000:
            raise ValueError(f"max_backends must be 1..1000, got {max_backends}")
        self.name = name
        self.work_dir = Path(work_dir)
        self.max_backends = max_backends
        self.listeners: dict[str, tuple[str, int]] = {}
        for service, listen in listeners.items():
            if not _NAME.match(service):
                raise ValueError(
                    f"service name must be letters, digits, '_', '.', '-': {service!r}"
                )
            self.listeners[service] = _split_listener(service, listen)
        self.config_path = self.work_dir / f"{name}.cfg"
        self.log_path = self.work_dir / f"{name}.log"
        self._socket_dir: Path | None = None
        self.socket_path = self.work_dir / f"{name}.sock"
        self._slots: dict[str, list[_Slot]] = {
            service: [_Slot(f"s{i}") for i in range(1, max_backends + 1)]
            for service in self.listeners
        }
        self._published: dict[str, list[Endpoint]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = asyncio.Lock()

    # --- process ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The HAProxy process id while it runs (``-db``: one process, no master)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def render_config(self) -> str:
        """The configuration file :meth:`start` writes."""
        lines = [
            "global",
            # One thread: plenty for the lab's rates, and the lab accounts its CPU.
            "    nbthread 1",
            f"    stats socket {self.socket_path} mode 600 level admin",
            "    stats timeout 30s",
            # -db keeps HAProxy in the foreground; stdout goes to the log file.
            "    log stdout format raw local0 info",
            "",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            # Errors only: a line per connection would cost CPU the lab accounts.
            "    option dontlog-normal",
            "    option dontlognull",
            "    timeout connect 2s",
            # gRPC channels live long, idle or not; the client decides when to stop.
            "    timeout client 1h",
            "    timeout server 1h",
            "    timeout tunnel 1h",
            "    timeout client-fin 10s",
            "    timeout server-fin 10s",
            # A pod that vanished before it was unpublished: retry another one. Only
            # connection failures are retried, so no call runs twice.
            "    retries 2",
            "    option redispatch 1",
        ]
        for service, (host, port) in self.listeners.items():
            lines += [
                "",
                f"frontend fe_{service}",
                f"    bind {host}:{port}",
                f"    default_backend be_{service}",
                "",
                f"backend be_{service}",
                "    balance roundrobin",
                f"    server-template s 1-{self.max_backends} {_PLACEHOLDER} disabled",
            ]
        return "\n".join(lines) + "\n"

    async def start(self, timeout_s: float = 30.0) -> None:
        """Writes the configuration, starts HAProxy and returns once every frontend
        accepts connections and the runtime API answers; raises with the log tail if
        it exits or does not get there within ``timeout_s``."""
        if self._process is not None:
            raise HAProxyError(f"haproxy {self.name} already started")
        binary = haproxy_binary()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="shop-haproxy-"))
            self.socket_path = self._socket_dir / f"{self.name}.sock"
        self.config_path.write_text(self.render_config())
        # See shop.lab.proxy_process for why not the event loop's subprocesses.
        self._process = await proxy_process.spawn(
            [binary, "-db", "-f", str(self.config_path)], self.log_path
        )
        try:
            await self._wait_up(timeout_s)
            for service, endpoints in list(self._published.items()):
                await self.publish(service, endpoints)
        except BaseException:
            await self.close()
            raise
        log.info("haproxy %s up, pid %s", self.name, self.pid)

    async def close(self) -> None:
        """Stops HAProxy (SIGTERM: immediate stop; SIGKILL if it lingers). Safe to call
        more than once and after a failed start."""
        process, self._process = self._process, None
        if process is not None:
            await proxy_process.stop(process)
        for slots in self._slots.values():
            for slot in slots:
                slot.endpoint, slot.state = None, "maint"
        with contextlib.suppress(OSError):
            self.socket_path.unlink(missing_ok=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self.socket_path = self.work_dir / f"{self.name}.sock"

    async def __aenter__(self) -> HAProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    async def _wait_up(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = dict(self.listeners)
        while True:
            process = self._process
            assert process is not None
            code = process.poll()
            if code is not None:
                raise HAProxyError(
                    f"haproxy {self.name} exited with code {code}:\n{self.log_tail()}"
                )
            for service, (host, port) in list(pending.items()):
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    del pending[service]
            if not pending:
                with contextlib.suppress(OSError, HAProxyError, asyncio.TimeoutError):
                    if "Pid:" in await self.command("show info"):
                        return
            if loop.time() > deadline:
                waiting = ", ".join(f"{h}:{p}" for h, p in pending.values()) or "runtime API"
                raise HAProxyError(
                    f"haproxy {self.name} not ready after {timeout_s}s (waiting for "
                    f"{waiting}):\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)

    # --- runtime API -----------------------------------------------------------------

    async def command(self, line: str, timeout_s: float = 10.0) -> str:
        """Sends one command to the runtime API and returns its answer. Every command
        this class sends is idempotent, so a timed-out exchange is tried once more."""
        if "\n" in line:
            raise ValueError("one command per call")

        async def exchange() -> bytes:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                # Non-interactive mode: HAProxy answers, then closes the connection.
                return await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        try:
            try:
                answer = await asyncio.wait_for(exchange(), timeout_s)
            except TimeoutError:
                log.warning("haproxy %s: no answer to %r, retrying", self.name, line)
                answer = await asyncio.wait_for(exchange(), timeout_s)
        except (OSError, TimeoutError) as error:
            raise HAProxyError(
                f"haproxy {self.name} ({self._state()}): runtime API {self.socket_path} "
                f"failed on {line!r}: {error!r}"
            ) from error
        return answer.decode(errors="replace")

    def _state(self) -> str:
        process = self._process
        if process is None:
            return "not running"
        code = process.poll()
        if code is None:
            return f"pid {process.pid}"
        return f"exited with code {code}"

    async def sessions(self, service: str) -> dict[str, int]:
        """Connections each pod of ``service`` is serving now, draining pods included."""
        usage = await self._usage(service)
        return {
            slot.endpoint.pod: usage[slot.server].sessions
            for slot in self._slots[service]
            if slot.endpoint is not None and slot.state != "maint"
        }

    async def _usage(self, service: str) -> dict[str, _Usage]:
        """What each slot of the backend is carrying, from ``show stat``."""
        text = await self.command(f"show stat be_{service} 4 -1")
        usage: dict[str, _Usage] = {}
        for row in csv.DictReader(io.StringIO(text.removeprefix("# "))):
            if row.get("pxname") != f"be_{service}" or row.get("svname") == "BACKEND":
                continue
            connections = sum(
                int(row.get(key) or 0)
                for key in ("used_conn_cur", "idle_conn_cur", "safe_conn_cur")
            )
            usage[row["svname"]] = _Usage(int(row.get("scur") or 0), connections)
        missing = [s.server for s in self._slots[service] if s.server not in usage]
        if missing:
            raise HAProxyError(f"show stat of be_{service} lacks {missing}: {text[:200]!r}")
        return usage

    async def _set_state(self, service: str, slot: _Slot, state: SlotState) -> None:
        answer = await self.command(f"set server be_{service}/{slot.server} state {state}")
        if answer.strip():
            raise HAProxyError(f"set {slot.server} {state} in be_{service}: {answer.strip()}")
        slot.state = state

    async def _point(self, service: str, slot: _Slot, endpoint: Endpoint) -> None:
        """Aims a slot out of rotation at ``endpoint``, then makes it ready. A drained
        slot is parked first; connections it still carries stay with the old pod (an
        established TCP connection never moves)."""
        assert slot.state != "ready"
        if slot.state == "drain":
            await self._set_state(service, slot, "maint")
        answer = await self.command(
            f"set server be_{service}/{slot.server} addr {endpoint.ip} port {endpoint.port}"
        )
        # "IP changed from ...", or "no need to change the addr, port changed ...".
        if "changed" not in answer and "no need to change" not in answer:
            raise HAProxyError(f"set {slot.server} addr in be_{service}: {answer.strip()}")
        slot.endpoint = endpoint
        await self._set_state(service, slot, "ready")

    # --- endpoints -------------------------------------------------------------------

    async def publish(self, service: str, endpoints: Sequence[Endpoint]) -> None:
        """Makes ``endpoints`` the backend set of ``service``, live.

        New pods take free slots before removed ones leave, so while a slot is free a
        backend is never empty during a replacement. A removed pod is drained: the
        connections it is serving stay open, new connections go elsewhere. With no
        slot free, removed pods are drained first and their slots reused (connections
        stay with the pod they were opened to): replacing every pod of a full backend
        leaves it empty for the few runtime commands in between. Raises
        :class:`HAProxyError` if there are more endpoints than ``max_backends`` slots,
        or if the process is gone.
        """
        if service not in self._slots:
            raise KeyError(f"haproxy {self.name} has no listener for {service!r}")
        wanted = {e.address: e for e in endpoints}
        if len(wanted) > self.max_backends:
            raise HAProxyError(
                f"haproxy {self.name}: {len(wanted)} endpoints for {service} but only "
                f"{self.max_backends} server slots (raise max_backends)"
            )
        self._published[service] = list(wanted.values())
        if self._process is None:
            return  # applied by start()
        code = self._process.poll()
        if code is not None:
            raise HAProxyError(f"haproxy {self.name} exited with code {code}:\n{self.log_tail()}")
        async with self._lock:
            await self._apply(service, wanted)

    async def _apply(self, service: str, wanted: dict[str, Endpoint]) -> None:
        slots = self._slots[service]
        by_address = {s.endpoint.address: s for s in slots if s.endpoint is not None}
        # 1. Pods a slot already points at (serving, draining or parked): keep or revive.
        for address, endpoint in wanted.items():
            slot = by_address.get(address)
            if slot is not None:
                slot.endpoint = endpoint
                if slot.state != "ready":
                    await self._set_state(service, slot, "ready")
        new = [e for a, e in sorted(wanted.items()) if a not in by_address]
        leaving = [
            s
            for s in slots
            if s.state == "ready" and s.endpoint is not None and s.endpoint.address not in wanted
        ]
        if new:
            # 2. New pods on clean slots, before anyone leaves.
            clean = await self._spare_slots(service)
            for slot, endpoint in zip(clean, new, strict=False):
                await self._point(service, slot, endpoint)
            new = new[len(clean) :]
        # 3. Removed pods get no new connections; the ones they are serving stay open.
        for slot in leaving:
            await self._set_state(service, slot, "drain")
        # 4. Pods still without a slot take one out of rotation, busy or not. There is
        # always one: no more pods are wanted than there are slots.
        if new:
            log.info(
                "haproxy %s: no clean slot in be_%s for %s, reusing drained ones",
                self.name,
                service,
                [e.pod for e in new],
            )
            spare = await self._spare_slots(service, busy=True)
            if len(spare) < len(new):
                raise HAProxyError(
                    f"haproxy {self.name}: {len(spare)} slots of be_{service} free for "
                    f"{[e.pod for e in new]}"
                )
            for slot, endpoint in zip(spare, new, strict=False):
                await self._point(service, slot, endpoint)
        log.info(
            "haproxy %s: %s -> %s",
            self.name,
            service,
            [s.endpoint.pod for s in slots if s.state == "ready" and s.endpoint is not None],
        )

    async def _spare_slots(self, service: str, *, busy: bool = False) -> list[_Slot]:
        """Parks drained slots that serve nothing, then returns the slots that can take
        a new pod, best first: parked slots with no connection left, never used first.
        With ``busy``, every other slot out of rotation follows (draining, or parked
        with connections still open), least busy first: reusing one moves none of its
        connections, but :meth:`sessions` then counts them for the new pod.
        """
        slots = self._slots[service]
        usage = await self._usage(service)
        for slot in slots:
            if slot.state == "drain" and usage[slot.server].sessions == 0:
                await self._set_state(service, slot, "maint")
        if any(s.state == "maint" for s in slots):
            usage = await self._usage(service)
        clean = [s for s in slots if s.state == "maint" and usage[s.server].idle]
        clean.sort(key=lambda s: s.endpoint is not None)
        if not busy:
            return clean
        rest = [s for s in slots if s.state != "ready" and s not in clean]
        return clean + sorted(rest, key=lambda s: usage[s.server].sessions)
