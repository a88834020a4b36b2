"""Dependencies follow use: what each distribution brings with it, and the lock pins all.

The closure of a distribution's requirements is computed from the metadata installed
in this environment (the editable installs carry their pyproject's requirements), with
markers and extras evaluated as pip does: the set pip would install into an empty
environment, without asking an index.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .dockerfile_model import parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]
# Only the orders and inventory services keep state.
DATABASE = {"asyncpg"}
# What only the lab (DNS server, xDS control plane) needs.
LAB = {"dnslib", "xds-protos"}
# The shop command's own: the load generator's histogram and progress display.
CLI = {"hdrhistogram", "rich"}


def distribution_name(folder: str) -> str:
    return f"grpc-shop-{Path(folder).name}"


def closure(*roots: str) -> set[str]:
    """Canonical names of ``roots`` ("name" or "name[extra]") and all they require."""
    seen: set[str] = set()
    pending = [Requirement(root) for root in roots]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for raw in importlib.metadata.requires(name) or []:
            needed = Requirement(raw)
            for extra in requirement.extras or {""}:
                # evaluate() starts from this interpreter's environment.
                if needed.marker is None or needed.marker.evaluate({"extra": extra}):
                    pending.append(needed)
                    break
    return {key.partition("[")[0] for key in seen}


def third_party(names: set[str]) -> set[str]:
    return {name for name in names if not name.startswith("grpc-shop-")}


def test_the_gateway_brings_no_database_library_and_nothing_of_the_tools() -> None:
    names = closure("grpc-shop-gateway")
    assert names & {"grpcio", "opentelemetry-sdk", "prometheus-client"}
    assert not names & (DATABASE | LAB | CLI), sorted(names & (DATABASE | LAB | CLI))
    assert {n for n in names if n.startswith("grpc-shop-")} == {
        "grpc-shop-gateway", "grpc-shop-runtime", "grpc-shop-api",
    }  # fmt: skip


@pytest.mark.parametrize("service", ["orders", "inventory"])
def test_stateful_services_bring_their_database_drivers_only(service: str) -> None:
    names = closure(f"grpc-shop-{service}")
    assert names >= DATABASE
    assert not names & (LAB | CLI)


def test_the_image_brings_no_lab_dependency() -> None:
    folders = parse_dockerfile(ROOT / "Dockerfile").stage("builder").build_args()["DISTRIBUTIONS"]
    names = closure(*(distribution_name(f) for f in folders.split()))
    assert not names & LAB, sorted(names & LAB)
    assert "grpc-shop-lab" not in names
    # The load generator runs from the image (the chart's loadgen Deployment).
    assert names >= CLI


def test_the_runtime_kit_and_the_contract_know_no_service() -> None:
    for root in ("grpc-shop-runtime[sql]", "grpc-shop-api"):
        assert {n for n in closure(root) if n.startswith("grpc-shop-")} <= {
            "grpc-shop-runtime", "grpc-shop-api",
        }, root  # fmt: skip


def lock_pins() -> dict[str, str]:
    """name -> version for this interpreter (the lock is universal: some names have one
    pin per Python version or platform, told apart by markers)."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line or line[0] in "# -":
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            [specifier] = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_the_lock_pins_every_dependency_at_the_installed_version() -> None:
    """What `make venv` installed is what requirements.lock says: a dependency added to
    a pyproject.toml without `make lock` would be installed unpinned and fail here."""
    pins = lock_pins()
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = [
        "grpc-shop-runtime[sql]", "grpc-shop-api", "grpc-shop-gateway", "grpc-shop-orders",
        "grpc-shop-inventory", "grpc-shop-cli[services]", "grpc-shop-lab",
        *workspace["dependency-groups"]["dev"],
    ]  # fmt: skip
    needed = third_party(closure(*roots))
    unpinned = sorted(needed - set(pins))
    assert not unpinned, f"not in requirements.lock (run `make lock`): {unpinned}"
    drifted = {
        name: (pins[name], importlib.metadata.version(name))
        for name in needed
        if importlib.metadata.version(name) != pins[name]
    }
    assert not drifted, f"installed versions differ from the lock: {drifted}"
