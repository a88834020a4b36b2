"""Every mode renders, lints strict, and every object is valid for Kubernetes 1.29-1.35."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from ..support.chart import ChartRenderer, Lint, Validate

FEATURES = ["defaults", "all-features", "escape-hatches"]  # conftest's feature_sets


@pytest.mark.parametrize("features", FEATURES)
def test_lint_strict_is_clean(
    mode: str,
    features: str,
    lint: Lint,
    chart_dir: Path,
    kube_versions: tuple[str, ...],
    feature_sets: dict[str, dict[str, Any]],
) -> None:
    values = {"mode": mode, **feature_sets[features]}
    for version in (kube_versions[0], kube_versions[-1]):
        assert lint(chart_dir, values, version) == []


def test_lint_catches_a_broken_template(lint: Lint, chart_dir: Path, tmp_path: Path) -> None:
    # The lint above must be able to fail: break a copy of the chart.
    broken = tmp_path / "grpc-shop"
    shutil.copytree(chart_dir, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: ConfigMap\nmetadata: [\n")
    assert lint(broken, {}, "1.35.0") != []


@pytest.mark.parametrize("features", FEATURES)
def test_every_object_is_valid_for_each_kubernetes_version(
    mode: str,
    features: str,
    render_chart: ChartRenderer,
    validate: Validate,
    feature_sets: dict[str, dict[str, Any]],
) -> None:
    rendered = render_chart(mode, feature_sets[features])
    objects = list(rendered.manifests())
    assert len(objects) >= 10
    for obj in objects:
        validate(obj)
        assert obj["metadata"].get("namespace") == "shop-ns", obj["metadata"]["name"]


def test_validation_rejects_unknown_fields(render_chart: ChartRenderer, validate: Validate) -> None:
    # The strict schemas and the CRD models must both refuse a misspelt field.
    rendered = render_chart("istio")
    deployment = rendered.get("Deployment", "shop-orders")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {}}
    with pytest.raises(AssertionError, match="readinesProbe"):
        validate(deployment)
    rule = rendered.get("DestinationRule", "shop-orders")
    rule["spec"]["trafficPolicy"]["loadBalancer"]["simpel"] = "ROUND_ROBIN"
    with pytest.raises(AssertionError, match="simpel"):
        validate(rule)


def test_validation_rejects_a_bad_istio_enum(
    render_chart: ChartRenderer, validate: Validate
) -> None:
    policy = render_chart("istio").get("PeerAuthentication", "shop")
    policy["spec"]["mtls"]["mode"] = "STRICTEST"
    with pytest.raises(ValueError, match=r"STRICTEST|mode"):
        validate(policy)


@pytest.mark.parametrize("release", ["shop", "grpc-shop", "r" * 53])
def test_names_fit_in_63_characters_and_stay_distinct(
    release: str,
    render_chart: ChartRenderer,
    validate: Validate,
    all_features: dict[str, Any],
) -> None:
    rendered = render_chart("headless", all_features, name=release)
    seen: set[tuple[str, str]] = set()
    for obj in rendered.manifests():
        name = obj["metadata"]["name"]
        assert len(name) <= 63, name
        assert (obj["kind"], name) not in seen, f"two {obj['kind']} named {name}"
        seen.add((obj["kind"], name))
        validate(obj)
    prefix = "shop" if release == "shop" else release[:44]
    assert f"{prefix}-inventory-headless" in rendered.names("Service")
