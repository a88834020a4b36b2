"""What the image's builder installs: the project built from the Docker build context.

The builder runs a regular ``pip install .`` on the files .dockerignore lets through,
so a runtime file missing from the wheel (generated *_pb2 modules, their .pyi
stubs, py.typed, any data file a module reads) would only show in a running
container. Here the same context is built into a wheel, its contents compared with
the package source, and the wheel installed on its own to import every module and
run the image's commands from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .dockerfile_model import build_context, parse_dockerignore

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "services" / "shop"


def package_files() -> set[str]:
    """Every file of the package source, as wheel paths (shop/...), caches aside."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def pip(*argv: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project's wheel, built from exactly the files the Docker build context has."""
    work = tmp_path_factory.mktemp("image-build")
    context = work / "context"
    for relative in build_context(ROOT, parse_dockerignore(ROOT / ".dockerignore")):
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    # No build isolation: the test may not download setuptools; the builder does.
    pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(work / "dist"),
        str(context),
    )
    [built] = (work / "dist").glob("grpc_shop-*.whl")
    yield built


def test_wheel_holds_every_package_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = package_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    # What the services cannot run or be type-checked without, by name.
    for module in ("common", "gateway", "orders", "inventory", "echo"):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert f"shop/v1/{module}{suffix}" in names
    assert "shop/py.typed" in names
    # And nothing of the repository that is not the package.
    assert not [n for n in names if not n.startswith(("shop/", "grpc_shop-"))]


def test_wheel_declares_the_shop_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        [entry_points] = [
            n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")
        ]
        text = archive.read(entry_points).decode()
    assert "shop = shop.cli.main:main" in text


def test_installed_wheel_runs_on_its_own(wheel: Path, tmp_path: Path) -> None:
    # Installed alone into a folder that comes first on sys.path, so nothing is
    # imported from the source tree; dependencies come from this environment.
    site = tmp_path / "site"
    pip("install", "--no-deps", "--no-compile", "--target", str(site), str(wheel))
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    code = (
        "import importlib, pkgutil, shop\n"
        f"assert shop.__file__.startswith({str(site)!r}), shop.__file__\n"
        "names = [m.name for m in pkgutil.walk_packages(shop.__path__, 'shop.')]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'):\n"
        "        importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    modules = {p for p in package_files() if p.endswith(".py")}
    assert int(result.stdout) >= len(modules) - 1  # every module but shop/__init__
    for argv in (["serve", "--help"], ["health", "--help"]):
        result = subprocess.run(
            [str(site / "bin" / "shop"), *argv],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
