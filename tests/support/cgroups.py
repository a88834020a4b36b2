"""Real pod cgroups for tests: a skip on a developer's machine without them, a
failure in CI, where a skip would hide that limits are no longer tested at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest

from shop.local.cgroups import CgroupsUnavailable, PodCgroups


def in_ci() -> bool:
    # Set by the CI services (GitHub Actions, GitLab CI, ...): CI=true.
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def skip_unless_ci(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI is set: tests needing cgroups must run here)")
    pytest.skip(reason)


def require_cgroups() -> None:
    """Skips (fails in CI) where pod cgroups cannot be made, naming why."""
    try:
        PodCgroups.create("probe").close()
    except CgroupsUnavailable as error:
        skip_unless_ci(f"pod cgroups unavailable: {error}")


@contextmanager
def pod_cgroups(owner: str = "test") -> Iterator[PodCgroups]:
    """Pod cgroups below this process's own, closed (processes killed, groups
    removed) however the test ends."""
    try:
        groups = PodCgroups.create(owner)
    except CgroupsUnavailable as error:
        skip_unless_ci(f"pod cgroups unavailable: {error}")
    try:
        yield groups
    finally:
        groups.close()


def make_cgroups_unavailable(monkeypatch: pytest.MonkeyPatch, reason: str) -> None:
    """Every attempt to make pod cgroups fails with ``reason``, as on a machine
    without them (or without root)."""

    def unavailable(owner: str, *, root: object = None) -> PodCgroups:
        raise CgroupsUnavailable(reason)

    monkeypatch.setattr(PodCgroups, "create", unavailable)
