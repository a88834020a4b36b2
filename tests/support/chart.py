"""The Helm chart rendered with Helm's own engine, and the checks of what comes out.

``helm-python-sdk`` embeds Helm v4 as a library (no helm binary, no cluster), so the
chart tests run the same template engine and values-schema check as ``helm install``.
Kubernetes objects are checked against the published OpenAPI schemas with unknown
fields rejected (``kubernetes-validate --strict``); Istio and Prometheus Operator
objects against the pydantic models generated from their CRDs. The manifests of
``istio/`` load here too, so that their tests use the same look-ups and checks.
"""

from __future__ import annotations

import base64
import copy
import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import helm_python
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails

from .paths import CHART_DIR

# The modes are whatever the chart's schema allows; a test taking a ``mode`` argument
# runs once per mode (see pytest_generate_tests).
MODES = tuple(
    json.loads((CHART_DIR / "values.schema.json").read_text())["properties"]["mode"]["enum"]
)
# Every Kubernetes minor the chart claims to support (Chart.yaml kubeVersion >=1.29).
KUBE_VERSIONS = tuple(f"1.{minor}.0" for minor in range(29, 36))
RELEASE = "shop"
NAMESPACE = "shop-ns"

# Every optional block switched on: the widest render the tests can check.
ALL_FEATURES: dict[str, Any] = {
    "loadgen": {"enabled": True},
    "networkPolicy": {"enabled": True},
    "podDisruptionBudget": {"enabled": True},
    "autoscaling": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": True},
    "topologySpread": {"enabled": True},
    "otel": {"endpoint": "http://opentelemetry-collector.observability.svc.cluster.local:4317"},
}

# Every escape hatch set, release-wide and per workload (orders, loadgen and postgresql
# override some): the values a cluster user would add to fit the chart to a cluster.
ESCAPE_HATCHES: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry-cred"}],
    "priorityClassName": "shop-high",
    "nodeSelector": {"pool": "shop"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 10,
                    "preference": {
                        "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]
                    },
                }
            ]
        }
    },
    "podAnnotations": {"example.com/owner": "team-shop", "example.com/cost-centre": "42"},
    "podLabels": {"team": "shop", "tier": "backend"},
    "extraEnv": [
        {"name": "TZ", "value": "UTC"},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ],
    "orders": {
        "extraEnv": [
            {"name": "TZ", "value": "Europe/Berlin"},
            {"name": "OTEL_EXPORTER_OTLP_HEADERS", "value": "x-tenant=shop"},
        ],
        "podAnnotations": {"example.com/owner": "team-orders"},
        "podLabels": {"tier": "core"},
        "nodeSelector": {"pool": "orders"},
        "tolerations": [{"key": "orders", "operator": "Exists"}],
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "orders"}},
                    }
                ]
            }
        },
    },
    "loadgen": {"enabled": True, "nodeSelector": {"pool": "load"}},
    "postgresql": {
        "tolerations": [
            {"key": "db", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
        ]
    },
}

Manifest = dict[str, Any]
Values = dict[str, Any]
# The session fixtures' callables (conftest.py): ``lint(chart_dir, values, "1.30.0")``,
# ``validate(obj)``, ``env_of(deployment)``, ``mount_volumes(rendered, workload, root)``.
Lint = Callable[[Path, Values, str], list[dict[str, Any]]]
Validate = Callable[[Manifest], None]
EnvOf = Callable[[Manifest], dict[str, Any]]
MountVolumes = Callable[["Rendered", Manifest, Path], dict[str, Path]]


# API group -> the package of its generated models, one module per version; any
# *.istio.io group maps to cloudcoil's Istio models (networking.istio.io/v1 ->
# cloudcoil.models.istio.networking.v1).
CRD_PACKAGES = {"monitoring.coreos.com": "cloudcoil.models.prometheus_operator"}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge, as Helm merges ``--set``/``-f`` values over the chart's."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class Rendered:
    """The objects of one render, with look-ups by kind and name."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.notes = next((text for path, text in files.items() if path.endswith("NOTES.txt")), "")
        self.objects: list[Manifest] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("__source__", path)
                    self.objects.append(doc)

    def manifests(self) -> Iterator[Manifest]:
        """Objects without the test's bookkeeping key."""
        for obj in self.objects:
            yield {k: v for k, v in obj.items() if k != "__source__"}

    def of_kind(self, kind: str) -> list[Manifest]:
        return [obj for obj in self.manifests() if obj["kind"] == kind]

    def get(self, kind: str, name: str | None = None) -> Manifest:
        """The one object of ``kind`` (named ``name``, when given)."""
        found = [o for o in self.of_kind(kind) if name in (None, o["metadata"]["name"])]
        if len(found) != 1:
            have = sorted(self.names(kind))
            raise AssertionError(f"expected one {kind} named {name!r}, found {have}")
        return found[0]

    def names(self, kind: str) -> set[str]:
        return {obj["metadata"]["name"] for obj in self.of_kind(kind)}


def container_env(deployment: Manifest) -> dict[str, Any]:
    """name -> value (or the valueFrom mapping) of the first container's env."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def secret_files(volume: Manifest) -> list[tuple[str, str, str, int]]:
    """(Secret name, key, path in the volume, mode) of each file a ``secret`` or
    ``projected`` volume shows; empty for any other kind of volume."""
    if "secret" in volume:
        plain = volume["secret"]
        sources = [{"secret": {"name": plain["secretName"], "items": plain["items"]}}]
        mode = volume["secret"].get("defaultMode", 0o644)
    elif "projected" in volume:
        sources = volume["projected"]["sources"]
        mode = volume["projected"].get("defaultMode", 0o644)
    else:
        return []
    files = []
    for source in sources:
        secret = source["secret"]
        for item in secret["items"]:  # the chart always names the keys it mounts
            files.append((secret["name"], item["key"], item["path"], item.get("mode", mode)))
    return files


def mount_secret_volumes(rendered: Rendered, workload: Manifest, root: Path) -> dict[str, Path]:
    """Writes the files of a workload's Secret-backed volumes under ``root``, as the
    kubelet would in its pod, from the Secrets of the same render (a Secret the render
    does not hold fails the test). Returns mountPath -> the directory standing in for it."""
    spec = workload["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in rendered.of_kind("Secret")}
    mounts: dict[str, Path] = {}
    for mount in spec["containers"][0].get("volumeMounts", []):
        files = secret_files(volumes.get(mount["name"], {}))  # claim templates: none
        if not files:
            continue
        directory = root / mount["mountPath"].strip("/")
        for secret, key, path, mode in files:
            assert secret in secrets, (
                f"{object_name(workload)} mounts Secret {secret}, not rendered"
            )
            assert key in secrets[secret], f"Secret {secret} has no key {key!r}"
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(secrets[secret][key]))
            target.chmod(mode)
        mounts[mount["mountPath"]] = directory
    return mounts


def load_manifests(folder: Path) -> Rendered:
    """The objects of a folder's ``*.yaml`` files, with the same look-ups as a render."""
    return Rendered({path.name: path.read_text() for path in sorted(folder.glob("*.yaml"))})


def object_name(obj: Manifest) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_kubernetes(obj: Manifest, version: str) -> None:
    """Strict OpenAPI validation of a built-in kind; raises AssertionError with the path."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path) or "<root>"
        raise AssertionError(
            f"{object_name(obj)}: invalid for Kubernetes {version} at {path}: {error.message}"
        ) from None
    except kubernetes_validate.SchemaNotFoundError as error:
        raise AssertionError(
            f"{object_name(obj)}: no schema to check it against: {error}"
        ) from None


def crd_model(api_version: str, kind: str) -> type[BaseModel] | None:
    """The generated model of a CRD kind; None for a kind with no CRD package (built-in)."""
    group, _, version = api_version.rpartition("/")
    package: str | None
    if group.endswith(".istio.io"):
        package = f"cloudcoil.models.istio.{group.removesuffix('.istio.io')}"
    else:
        package = CRD_PACKAGES.get(group)
    if package is None:
        return None
    try:
        module = importlib.import_module(f"{package}.{version}")
    except ModuleNotFoundError:
        raise AssertionError(f"no model module for {api_version} ({package}.{version})") from None
    model = getattr(module, kind, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise AssertionError(f"no model for {api_version} {kind} in {module.__name__}")
    return model


def _dropped_or_changed(given: Any, dumped: Any, path: str) -> Iterator[str]:
    """Paths of the input the model's dump lost or changed (added defaults are fine)."""
    if isinstance(given, dict):
        if not isinstance(dumped, dict):
            yield f"{path or '<root>'}: became {dumped!r}"
            return
        for key, value in given.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key) not in dumped:  # the dump's keys are strings: 9464 is "9464"
                # An empty mapping or list is legitimately left out by the dump.
                if value not in ({}, [], None):
                    yield f"{where}: unknown field (dropped by the model)"
            else:
                yield from _dropped_or_changed(value, dumped[str(key)], where)
    elif isinstance(given, list):
        if not isinstance(dumped, list) or len(dumped) != len(given):
            yield f"{path}: list became {dumped!r}"
            return
        for index, (item, dumped_item) in enumerate(zip(given, dumped, strict=True)):
            yield from _dropped_or_changed(item, dumped_item, f"{path}[{index}]")
    elif given != dumped:  # 10 == 10.0: numbers compare by value
        yield f"{path}: {given!r} became {dumped!r}"


def validate_crd_object(obj: Manifest, model: type[BaseModel]) -> None:
    """Validate a CRD kind with its generated model; unknown fields fail too.

    A wrong type or enum value raises the model's ValidationError, titled with the
    object's kind/name. The models accept and silently drop unknown fields, so the
    dump is compared with the input: every input field the model did not keep, or
    changed, is reported by its path.
    """
    try:
        parsed = model.model_validate(obj)
    except ValidationError as error:
        details = cast("list[InitErrorDetails]", error.errors())
        raise ValidationError.from_exception_data(object_name(obj), details) from None
    dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    problems = "\n".join(_dropped_or_changed(obj, dumped, ""))
    assert not problems, f"{object_name(obj)}: not part of the {obj['apiVersion']} API:\n{problems}"


def validate_object(obj: Manifest, versions: tuple[str, ...] = KUBE_VERSIONS) -> None:
    """A CRD kind against its model; any other kind against every Kubernetes version."""
    model = crd_model(obj["apiVersion"], obj["kind"])
    if model is not None:
        validate_crd_object(obj, model)
        return
    for version in versions:
        validate_kubernetes(obj, version)


class ChartRenderer:
    """``render_chart(mode, values, name=...)``; a copy per call, renders cached."""

    modes = MODES

    def __init__(self) -> None:
        self._cache: dict[str, dict[str, str]] = {}

    def __call__(
        self, mode: str = "clusterip", values: dict[str, Any] | None = None, *, name: str = RELEASE
    ) -> Rendered:
        merged = merge(values or {}, {"mode": mode})
        key = name + "\n" + yaml.safe_dump(merged, sort_keys=True)
        if key not in self._cache:
            chart = helm_python.Chart.load(CHART_DIR)
            self._cache[key] = chart.render(values=merged, name=name, namespace=NAMESPACE)
        return Rendered(self._cache[key])


def lint_findings(path: Path, values: dict[str, Any], kube_version: str) -> list[dict[str, Any]]:
    """``helm lint --strict`` warnings and errors (info-level findings dropped)."""
    report = helm_python.lint(
        path, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}"
    )
    warning = 2  # helm's support.Severity: 1 info, 2 warning, 3 error
    return [m for m in report["messages"] if m["severity"] >= warning] + [
        {"error": e} for e in report["errors"]
    ]
