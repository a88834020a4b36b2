"""A throw-away PostgreSQL server on loopback, for tests and ``--postgres`` runs.

PostgreSQL refuses to run as root, so when we are root the server runs as the
``postgres`` system user (created by Debian's packages) in a directory it owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shop.local.addresses import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class PostgresUnavailable(RuntimeError):
    pass


def find_binary(name: str) -> str:
    for directory in PG_BIN_DIRS:
        candidate = directory / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise PostgresUnavailable(
            f"{name} not found: install PostgreSQL server binaries "
            "(Debian: apt-get install postgresql)"
        )
    return found


@dataclass
class PostgresServer:
    data_dir: Path
    host: str
    port: int
    user: str
    _run_as: str | None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/shop"

    @property
    def pid(self) -> int:
        """The postmaster's process id (its children are the server's other processes)."""
        with open(self.data_dir / "postmaster.pid", encoding="ascii") as pid_file:
            return int(pid_file.readline())

    def create_database(self, name: str) -> str:
        """Creates an empty database and returns its URL (the services' DATABASE_URL form)."""
        _run(self._command(
            find_binary("createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, name
        ))  # fmt: skip
        return f"postgresql://{self.user}@{self.host}:{self.port}/{name}"

    def _command(self, *args: str) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    def stop(self) -> None:
        subprocess.run(
            self._command(find_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_postgres(host: str = "127.0.0.1", timeout_s: float = 60.0) -> PostgresServer:
    """initdb + start with trust auth on loopback; returns once ``shop`` db exists."""
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable(
                "running as root and no 'postgres' user exists to run the server as"
            ) from None
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="shop-pg-"))
    data_dir = root / "data"
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = free_port(host)
    server = PostgresServer(data_dir, host, port, "postgres", run_as)
    try:
        _run(server._command(
            find_binary("initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-sync",
        ))  # fmt: skip
        options = (
            f"-h {host} -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        _run(server._command(
            find_binary("pg_ctl"), "-D", str(data_dir), "-o", options, "-l",
            str(root / "server.log"), "-w", "-t", str(int(timeout_s)), "start",
        ))  # fmt: skip
        _run(server._command(
            find_binary("createdb"), "-h", host, "-p", str(port), "-U", "postgres", "shop"
        ))  # fmt: skip
    except BaseException:
        server.stop()
        raise
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return server


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PostgresUnavailable(
            f"{' '.join(command[:4])}... failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-800:]}"
        )
