"""The Grafana dashboard: well formed, on a Prometheus datasource variable, covering what
operators watch. (That its series exist is checked against live /metrics elsewhere.)"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.deploy.tools import DASHBOARD, RULES


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def _panels() -> list[dict[str, Any]]:
    return [panel for panel in _dashboard()["panels"] if panel["type"] != "row"]


def test_panels_have_unique_ids_and_query_the_datasource_variable() -> None:
    dashboard = _dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in _dashboard()["panels"]:
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        assert grid["x"] + grid["w"] <= 24
        taken |= cells


def test_dashboard_covers_what_operators_watch() -> None:
    queries = {
        panel["title"]: " ".join(target["expr"] for target in panel["targets"])
        for panel in _panels()
    }
    every = " ".join(queries.values())
    for series in (
        "time_to_first_event",
        'scriptgen_tokens_total{direction="out"}',
        "scriptgen_gateway_active_streams",
        "scriptgen_grpc_requests_total",
        "scriptgen_http_requests_total",
        "scriptgen_provider_requests_total",
        "scriptgen_provider_breaker_state",
        "scriptgen_gateway_ready",
        "scriptgen_core_serving",
        "scriptgen_inter_token_latency_seconds_bucket",
        "scriptgen:event_loop_lag_seconds:p99_1m",
    ):
        assert series in every, series
    assert any("by (method, code)" in query for query in queries.values())


def test_recorded_series_on_the_dashboard_are_recorded() -> None:
    document = yaml.safe_load(RULES.read_text())
    recorded = {
        rule["record"]
        for group in document["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    used = {
        name
        for panel in _panels()
        for target in panel["targets"]
        for name in re.findall(r"scriptgen:[a-z0-9_:]+", target["expr"])
    }
    assert used and used <= recorded
