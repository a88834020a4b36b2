"""Where the project's files are, for the tests that read them."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CHART_DIR = REPO / "helm" / "grpc-shop"
DASHBOARDS_DIR = CHART_DIR / "dashboards"
RULES_DIR = CHART_DIR / "rules"
ISTIO_DIR = REPO / "istio"
