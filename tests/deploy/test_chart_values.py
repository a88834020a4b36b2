"""values.yaml documents every knob, and the schema knows exactly those knobs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][A-Za-z0-9]*):")


def test_every_key_has_a_comment_above_it(chart_dir: Path) -> None:
    lines = (chart_dir / "values.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = KEY.match(line)
        # Keys at the top two levels; resource quantities below them explain themselves.
        if not match or len(match["indent"]) > 2 or match["key"] in ("requests", "limits"):
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            undocumented.append(f"line {number + 1}: {line.strip()}")
    assert undocumented == []


def _paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict) and key not in ("resources", "labels"):
            paths |= _paths(value, f"{path}.")
    return paths


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        if key not in ("resources", "labels"):
            paths |= _schema_paths(sub, f"{path}.")
    return paths


def _subschemas(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every schema nested in ``node``: properties, definitions, items, map values, allOf..."""
    found: list[dict[str, Any]] = []
    for key in ("properties", "definitions"):
        found.extend(node.get(key, {}).values())
    for key in ("items", "additionalProperties", "propertyNames", "if", "then", "else"):
        if isinstance(node.get(key), dict):
            found.append(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        found.extend(node.get(key, []))
    return found


def test_schema_and_values_name_the_same_keys(chart_dir: Path) -> None:
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    # `global` is Helm's, shared with subcharts; it has no default here.
    assert _schema_paths(schema) - {"global"} == _paths(values)
    # Unknown keys are refused at every level (typos never pass silently), including
    # the Kubernetes structures (affinity, tolerations, env) kept under definitions.
    stack = [schema]
    objects = 0
    while stack:
        node = stack.pop()
        if "$ref" in node:
            target: Any = schema
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]  # a dangling reference fails here
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, node.get("properties", {}).keys()
            objects += 1
        stack.extend(_subschemas(node))
    assert objects > 30  # the walk reached the nested definitions


def test_every_set_flag_in_the_docs_is_a_real_value(chart_dir: Path, render_chart: Any) -> None:
    import helm_python

    repo = chart_dir.parents[1]
    docs = [repo / "README.md", *sorted((repo / "istio").glob("*.md"))]
    values = _paths(yaml.safe_load((chart_dir / "values.yaml").read_text()))
    flags = [
        (doc.name, flag)
        for doc in docs
        for flag in re.findall(r"--set(?:-string)?[ =]([A-Za-z][\w.]*=[^\s`\\]+)", doc.read_text())
    ]
    assert len(flags) >= 3
    for doc, flag in flags:
        key = flag.split("=", 1)[0]
        assert key in values, f"{doc}: --set {flag} names no value of the chart"
        parsed = helm_python.parse_set_string(flag)
        mode = parsed.pop("mode", "istio")
        render_chart(mode, parsed)  # the schema accepts the documented value


def test_every_workload_the_docs_name_exists(
    chart_dir: Path, render_chart: Any, all_features: dict[str, Any]
) -> None:
    # `kubectl logs deploy/shop-loadgen` and the like must name what the chart
    # (release "shop") or istio/ creates.
    repo = chart_dir.parents[1]
    rendered = render_chart("istio", all_features)
    kinds = {"deploy": "Deployment", "svc": "Service", "statefulset": "StatefulSet"}
    istio_objects = [
        doc
        for path in sorted((repo / "istio").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    named = 0
    for doc in [repo / "README.md", repo / "istio" / "README.md"]:
        text = doc.read_text()
        for short, name in re.findall(
            r"(?<![\w/])(deploy|svc|statefulset)/([a-z][a-z0-9-]+)", text
        ):
            if name in ("istiod",):  # Istio's own, installed by istioctl
                continue
            kind = kinds[short]
            exists = name in rendered.names(kind) or any(
                o["kind"] == kind and o["metadata"]["name"] == name for o in istio_objects
            )
            assert exists, f"{doc.name}: {short}/{name} is not created by the chart or istio/"
            named += 1
    assert named >= 5
