"""The compose files are valid compose, by two independent readers.

check-jsonschema holds them to the Compose Specification's JSON schema (unknown keys,
wrong types); Debian's docker-compose (v1, runs with no engine) also resolves what
the schema cannot see: merge keys, extension fields, ``depends_on`` naming services
that exist, and the merge of the proxy override over the base file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .compose_model import COMPOSE_FILE, PROXY_FILE, ROOT, docker_compose, load_yaml, tool

STACKS = {
    "headless": (COMPOSE_FILE,),
    "proxy": (COMPOSE_FILE, PROXY_FILE),
}


def test_compose_files_follow_the_compose_spec() -> None:
    checker = tool("check-jsonschema", "pip install 'check-jsonschema>=0.39' into .venv")
    done = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE), str(PROXY_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("files", STACKS.values(), ids=STACKS.keys())
def test_docker_compose_accepts_the_stack(files: tuple[Path, ...]) -> None:
    command = [docker_compose()]
    for path in files:
        command += ["-f", str(path)]
    done = subprocess.run(
        [*command, "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # Warnings (a variable that is not set, a key that is ignored) mean a stack that
    # does not do what it says.
    assert "WARN" not in done.stderr, done.stderr


@pytest.mark.parametrize("path", [COMPOSE_FILE, PROXY_FILE], ids=lambda path: path.name)
def test_every_image_is_pinned(path: Path) -> None:
    """A tag with a version number, not `latest`: the stack must not change under a user."""
    for name, service in load_yaml(path)["services"].items():
        if "image" not in service:
            continue  # an override of a service the base file defines
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image!r} not pinned"
