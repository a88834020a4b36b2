"""What the image's builder installs: its distributions built from the Docker build context.

The builder runs regular ``pip install`` of the folders its DISTRIBUTIONS argument names,
on the files .dockerignore lets through, so a runtime file missing from a wheel
(generated *_pb2 modules, their .pyi stubs, py.typed, any data file a module reads)
would only show in a running container. Here the same context is built into wheels,
their contents compared with the source, and the wheels installed on their own to
import every module and run the image's commands from them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .dockerfile_model import build_context, parse_dockerfile, parse_dockerignore

ROOT = Path(__file__).resolve().parents[2]
IMAGE_FOLDERS = (
    parse_dockerfile(ROOT / "Dockerfile").stage("builder").build_args()["DISTRIBUTIONS"].split()
)


def source_files(folder: str) -> set[str]:
    """Every file of a distribution's src/ folder, as wheel paths (shop/...), caches aside."""
    src = ROOT / folder / "src"
    return {
        path.relative_to(src).as_posix()
        for path in src.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
        and not any(part.endswith(".egg-info") for part in path.parts)
    }


def pip(*argv: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each image distribution's wheel, built from exactly the Docker build context."""
    work = tmp_path_factory.mktemp("image-build")
    context = work / "context"
    for relative in build_context(ROOT, parse_dockerignore(ROOT / ".dockerignore")):
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    # No build isolation: setuptools comes from the dev group, nothing is downloaded.
    pip(
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(work / "dist"),
        *(str(context / folder) for folder in IMAGE_FOLDERS),
    )
    built = {}
    for folder in IMAGE_FOLDERS:
        name = f"grpc_shop_{Path(folder).name}"
        [wheel] = (work / "dist").glob(f"{name}-*.whl")
        built[folder] = wheel
    return built


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_each_wheel_holds_its_distribution_and_nothing_else(wheels: dict[str, Path]) -> None:
    for folder, wheel in wheels.items():
        names = wheel_names(wheel)
        missing = source_files(folder) - names
        assert not missing, f"{folder}: not in the wheel: {sorted(missing)}"
        # The namespace stays open: no wheel may claim shop/__init__.py.
        assert "shop/__init__.py" not in names
        assert not [n for n in names if not n.startswith(("shop/", "grpc_shop_"))], folder


def test_api_wheel_carries_the_generated_code_and_its_types(wheels: dict[str, Path]) -> None:
    names = wheel_names(wheels["services/api"])
    for module in ("common", "gateway", "orders", "inventory", "echo"):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert f"shop/v1/{module}{suffix}" in names
    for folder, wheel in wheels.items():
        packages = {
            n.split("/")[1]
            for n in wheel_names(wheel)
            if n.startswith("shop/") and n.count("/") > 1
        }
        for package in packages - {"cli"}:  # shop.cli is shared with the lab: no marker
            assert f"shop/{package}/py.typed" in wheel_names(wheel), (folder, package)


def test_cli_wheel_declares_the_shop_command(wheels: dict[str, Path]) -> None:
    wheel = wheels["tools/cli"]
    with zipfile.ZipFile(wheel) as archive:
        [entry_points] = [
            n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")
        ]
        text = archive.read(entry_points).decode()
    assert "shop = shop.cli.main:main" in text


# Runs in a fresh interpreter of this environment with the image's wheels first on the
# path and this checkout's editable installs taken off it, so every shop module comes
# from the wheels (third-party dependencies still come from this environment).
ISOLATED = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
sys.path_importer_cache.clear()
"""


def run_isolated(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n{ISOLATED}{code}"],
        cwd=site.parent,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def site(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("image-site") / "site"
    pip("install", "--no-deps", "--no-compile", "--target", str(target), *map(str, wheels.values()))
    return target


def test_installed_wheels_import_every_module(wheels: dict[str, Path], site: Path) -> None:
    modules = sorted(
        name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        for wheel in wheels.values()
        for name in wheel_names(wheel)
        if name.endswith(".py") and not name.endswith("__main__.py")
    )
    code = (
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(site)!r}), (name, module.__file__)\n"
        "print(len(set(sys.modules) & set(" + repr(modules) + ")))\n"
    )
    result = run_isolated(site, code)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(modules)
    # Nothing of the lab came with them.
    result = run_isolated(site, "import shop.lab")
    assert result.returncode != 0 and "No module named 'shop.lab'" in result.stderr


@pytest.mark.parametrize("command", [["serve", "--help"], ["health", "--help"], ["load", "--help"]])
def test_image_commands_run_from_the_wheels(site: Path, command: list[str]) -> None:
    result = run_isolated(
        site, f"from shop.cli.main import main\nraise SystemExit(main({command!r}))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: shop {command[0]}")


def test_a_lab_command_in_the_image_says_what_is_missing(site: Path) -> None:
    result = run_isolated(
        site, "from shop.cli.main import main\nraise SystemExit(main(['lab', '--steady', '1']))"
    )
    assert result.returncode == 2, result.stderr
    assert "grpc-shop-lab" in result.stderr and "Traceback" not in result.stderr
