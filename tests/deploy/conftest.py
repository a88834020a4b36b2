"""Fixtures of the chart tests: renders of the Helm chart, the manifests of ``istio/``,
and the checks of what comes out (see tests/support/chart.py for what they do)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ..support.chart import (
    ALL_FEATURES,
    ESCAPE_HATCHES,
    KUBE_VERSIONS,
    MODES,
    ChartRenderer,
    EnvOf,
    Lint,
    MountVolumes,
    Rendered,
    Validate,
    Values,
    container_env,
    lint_findings,
    load_manifests,
    merge,
    mount_secret_volumes,
    object_name,
    validate_object,
)
from ..support.paths import CHART_DIR, ISTIO_DIR


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test taking a ``mode`` argument runs once per mode the chart's schema allows.
    if "mode" in metafunc.fixturenames and not any(
        "mode" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize")
    ):
        metafunc.parametrize("mode", MODES)
    if "istio_object" in metafunc.fixturenames:
        # Every object of istio/*.yaml that ``validate`` checks; the IstioOperator has
        # no schema or model and is checked field by field in test_istio_mesh_profile.py.
        folder = load_manifests(ISTIO_DIR)
        pairs = [
            (f"{source['__source__']}:{object_name(obj)}", obj)
            for source, obj in zip(folder.objects, folder.manifests(), strict=True)
            if obj["kind"] != "IstioOperator"
        ]
        metafunc.parametrize("istio_object", [obj for _, obj in pairs], ids=[i for i, _ in pairs])


@pytest.fixture(scope="session")
def render_chart() -> ChartRenderer:
    return ChartRenderer()


@pytest.fixture(scope="session")
def all_features() -> Values:
    """Values that switch every optional block on."""
    return copy.deepcopy(ALL_FEATURES)


@pytest.fixture(scope="session")
def escape_hatches() -> Values:
    """Values that set every escape hatch (ESCAPE_HATCHES)."""
    return copy.deepcopy(ESCAPE_HATCHES)


@pytest.fixture(scope="session")
def feature_sets() -> dict[str, Values]:
    """Named sets of values the validity tests render: the defaults, every optional block,
    and every optional block with every escape hatch."""
    return {
        "defaults": {},
        "all-features": copy.deepcopy(ALL_FEATURES),
        "escape-hatches": merge(ALL_FEATURES, ESCAPE_HATCHES),
    }


@pytest.fixture(scope="session")
def lint() -> Lint:
    """``lint(chart_dir, values, "1.30.0")`` -> strict findings."""
    return lint_findings


@pytest.fixture(scope="session")
def validate() -> Validate:
    """``validate(obj)``: Kubernetes schemas 1.29-1.35 (strict) or the CRD's model.

    Raises AssertionError naming the kind/name and the path of an unknown field (or of
    a kind nothing knows), pydantic's ValidationError (a ValueError) for a CRD field
    of the wrong type or enum value.
    """
    return validate_object


@pytest.fixture
def istio_manifests() -> Rendered:
    """The objects of istio/*.yaml (``.get(kind, name)``, ``.of_kind(kind)``, ...),
    loaded afresh for each test, so a test may change them."""
    return load_manifests(ISTIO_DIR)


@pytest.fixture(scope="session")
def env_of() -> EnvOf:
    """``env_of(deployment)``: its first container's environment, name -> value."""
    return container_env


@pytest.fixture(scope="session")
def mount_volumes() -> MountVolumes:
    """``mount_volumes(rendered, deployment, root)``: its Secret volumes as files under
    root, mountPath -> directory (see mount_secret_volumes)."""
    return mount_secret_volumes


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR


@pytest.fixture(scope="session")
def kube_versions() -> tuple[str, ...]:
    return KUBE_VERSIONS
