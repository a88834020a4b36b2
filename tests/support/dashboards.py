"""The Grafana dashboards and Prometheus rule files the chart ships, and every PromQL
expression in them, with Grafana's variables replaced the way Grafana sends them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from .paths import DASHBOARDS_DIR, RULES_DIR

DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))
RULE_FILES = sorted(RULES_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class Expression:
    source: str  # "balancing.json: Calls/s per pod" or "grpc-shop.rules.yaml: record ..."
    expr: str
    kind: str  # "panel", "record" or "alert"
    dashboard: str = ""

    @property
    def mesh_only(self) -> bool:
        """On Envoy's metrics (istio_* from Istio's sidecars, envoy_* from any Envoy),
        which no local shop without a proxy produces."""
        return "istio_" in self.expr or "envoy_" in self.expr

    @property
    def name(self) -> str:
        """The rule's name (record or alert), for rule expressions."""
        return self.source.split(f"{self.kind} ", 1)[-1]


def as_grafana_sends(expr: str) -> str:
    """Grafana's variables replaced the way Grafana would for 'All' and a 1m step."""
    expr = re.sub(r"\$\{?__rate_interval\}?", "1m", expr)
    expr = re.sub(r"\$\{?__interval\}?", "15s", expr)
    expr = re.sub(r"\$\{?__range\}?", "5m", expr)
    return re.sub(r"\$\{?(\w+)(?::\w+)?\}?", ".*", expr)


def panel_expressions(path: Path) -> Iterator[Expression]:
    """Every target expression of a dashboard's panels, those in collapsed rows too."""
    dashboard = json.loads(path.read_text())
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))  # collapsed rows
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield Expression(
                    f"{path.name}: {panel.get('title')}",
                    as_grafana_sends(target["expr"]),
                    "panel",
                    path.name,
                )


def rule_expressions(path: Path) -> Iterator[Expression]:
    """Every recording rule's and alert's expression of a rule file."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            kind = "record" if "record" in rule else "alert"
            yield Expression(f"{path.name}: {kind} {rule.get(kind)}", rule["expr"], kind)


def shop_expressions() -> list[Expression]:
    """Every expression the project ships: dashboard panels, recording rules, alerts."""
    found = [e for path in DASHBOARDS for e in panel_expressions(path)]
    found += [e for path in RULE_FILES for e in rule_expressions(path)]
    return found
