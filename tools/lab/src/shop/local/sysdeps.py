"""Checks (and, as root on Debian/Ubuntu, installs) the system programs the shop uses.

``python -m shop.local.sysdeps`` reports what is missing; ``--install`` runs
apt-get for it when we are root, and otherwise prints the command to run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SystemProgram:
    name: str
    debian_package: str
    purpose: str

    def present(self) -> bool:
        if shutil.which(self.name):
            return True
        return any(Path("/usr/lib/postgresql").glob(f"*/bin/{self.name}"))


REQUIRED: tuple[SystemProgram, ...] = (
    SystemProgram("initdb", "postgresql", "PostgreSQL server for the storage tests"),
    SystemProgram("pg_ctl", "postgresql", "PostgreSQL server for the storage tests"),
    SystemProgram("runuser", "util-linux", "run PostgreSQL as a non-root user"),
    SystemProgram("haproxy", "haproxy", "the lab's kube-proxy (L4) and the compose proxy test"),
    SystemProgram("prometheus", "prometheus", "a real Prometheus for the dashboard and rule tests"),
    SystemProgram("promtool", "prometheus", "checks and unit-tests Prometheus rules"),
    SystemProgram("docker-compose", "docker-compose", "validates the compose stack (no engine)"),
)


def missing(programs: tuple[SystemProgram, ...] = REQUIRED) -> list[SystemProgram]:
    return [p for p in programs if not p.present()]


def install(programs: list[SystemProgram]) -> int:
    packages = sorted({p.debian_package for p in programs})
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(
            "missing system packages: " + ", ".join(packages) + "\n"
            "install them with: sudo " + " ".join(command),
            file=sys.stderr,
        )
        return 1
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(command, check=True, env=env)
    still = missing(tuple(programs))
    if still:
        print("still missing after install: " + ", ".join(p.name for p in still), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--install", action="store_true", help="apt-get install what is missing")
    args = parser.parse_args(argv)
    absent = missing()
    if not absent:
        print("system packages: all present", file=sys.stderr)
        return 0
    for program in absent:
        print(f"missing: {program.name} ({program.purpose})", file=sys.stderr)
    return install(absent) if args.install else 1


if __name__ == "__main__":
    raise SystemExit(main())
