"""The compose stack as data: files, services, mounts, and the tools that check them.

No Docker engine runs here, so the stack is checked the way an engine would read it:
the YAML with its anchors resolved (PyYAML applies ``<<`` merge keys as compose
does), Debian's ``docker-compose`` for the merged view of several ``-f`` files, and
the real programs (promtool, haproxy) for the configuration files the containers
load. A missing program is a failure naming the package to install, never a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROXY_FILE = ROOT / "docker-compose.proxy.yml"
COMPOSE_DIR = ROOT / "compose"

# The shop servers, by the `shop serve` name each compose service runs.
SHOP_SERVERS = ("gateway", "orders", "inventory")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def base_compose() -> dict[str, Any]:
    """docker-compose.yml alone, anchors and merge keys resolved."""
    data: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return data


def tool(name: str, install_hint: str) -> str:
    """Path of a program the tests need, or a failure saying how to install it."""
    venv_copy = Path(sys.executable).parent / name
    if venv_copy.exists():
        return str(venv_copy)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; it checks the compose stack: {install_hint}")
    return found


def docker_compose() -> str:
    return tool("docker-compose", "apt-get install docker-compose (Debian's compose v1)")


def merged_compose(*files: Path) -> dict[str, Any]:
    """What compose makes of several ``-f`` files, as ``docker-compose config`` prints it."""
    command = [docker_compose()]
    for path in files:
        command += ["-f", str(path)]
    done = subprocess.run(
        [*command, "config"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    merged: dict[str, Any] = yaml.safe_load(done.stdout)
    return merged


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    assert isinstance(command, list), f"use the exec (list) form for command, got {command!r}"
    return [str(word) for word in command]


def shop_server_names(compose: dict[str, Any]) -> dict[str, str]:
    """compose service name -> the shop service it serves (``command: [serve, X]``)."""
    names = {}
    for name, service in compose["services"].items():
        words = command_words(service)
        if words[:1] == ["serve"]:
            names[name] = words[1]
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose allows a list of KEY=VALUE too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        """A host path (relative to the compose file's folder), not a named volume."""
        return self.source.startswith((".", "/"))

    def host_path(self) -> Path:
        return (ROOT / self.source).resolve()


def mounts(service: dict[str, Any]) -> list[Mount]:
    """The service's volumes, short (``src:dst[:ro]``) or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *options = volume.split(":")
            found.append(Mount(source, target, "ro" in ",".join(options).split(",")))
        else:
            found.append(
                Mount(volume["source"], volume["target"], bool(volume.get("read_only", False)))
            )
    return found


def mount_of(service: dict[str, Any], source: str) -> Mount:
    """The bind mount of ``source`` (a path relative to the repository)."""
    wanted = (ROOT / source).resolve()
    for mount in mounts(service):
        if mount.is_bind and mount.host_path() == wanted:
            return mount
    raise AssertionError(f"{source} is not mounted; mounts: {mounts(service)}")


def host_path_for(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from on the host, through a bind mount."""
    inside = PurePosixPath(container_path)
    for mount in mounts(service):
        target = PurePosixPath(mount.target)
        if mount.is_bind and (inside == target or target in inside.parents):
            return mount.host_path().joinpath(*inside.relative_to(target).parts)
    raise AssertionError(f"nothing is mounted at {container_path}: {mounts(service)}")


def flag_value(words: list[str], flag: str) -> str:
    """``--flag=value`` or ``--flag value`` from a command line."""
    for index, word in enumerate(words):
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
        if word == flag and index + 1 < len(words):
            return words[index + 1]
    raise AssertionError(f"{flag} is not set in {words}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(value: str | int | float) -> float:
    """A compose duration (``1m30s``, ``20s``) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = _DURATION.findall(value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port``, ``dns:///host:port`` or ``http://host:port`` -> (host, port)."""
    rest = re.sub(r"^[a-z][a-z0-9+.-]*://+", "", address)
    host, _, port = rest.rstrip("/").rpartition(":")
    return host, int(port)
