"""The Grafana dashboard names only metrics and labels the service exports: a metric renamed in
infra/metrics.py without the dashboard would leave an operator an empty panel mid on-sale."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from infra import metrics

DASHBOARD = Path(__file__).parents[2] / "ops" / "grafana" / "linjerum.json"
# The series each kind of metric is exported as.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def _exported() -> dict[str, set[str]]:
    """Every series name infra/metrics.py exports, with the labels it may carry."""
    series: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        (described,) = metric.describe()
        labels = set(metric._labelnames)
        for suffix in SUFFIXES[described.type]:
            series[described.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "expr" in node:
            yield node["expr"]
        for value in node.values():
            yield from _exprs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _exprs(value)


def test_every_dashboard_query_names_exported_metrics_and_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = list(_exprs(dashboard))
    assert len(exprs) >= len(dashboard["panels"]) >= 10
    exported = _exported()
    for expr in exprs:
        names = re.findall(r"\blinjerum_\w+", expr)
        assert names, expr
        for name in names:
            assert name in exported, f"{name} (in {expr}) is not defined in infra/metrics.py"
        allowed = set().union(*(exported[n] for n in names))
        grouped = [
            label.strip()
            for clause in re.findall(r"\bby \(([^)]*)\)", expr)
            for label in clause.split(",")
        ]
        matched = re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr)
        for label in grouped + matched:
            assert label in allowed, f"label {label!r} is not one of {sorted(allowed)}: {expr}"


def test_panels_have_unique_ids_and_queries() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["targets"] and p["title"] for p in panels)
