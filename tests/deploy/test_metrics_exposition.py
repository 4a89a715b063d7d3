"""Both /metrics endpoints after real traffic: clean for `promtool check metrics`, and
exporting every series the alert rules and the dashboard read (so they cannot drift)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import yaml

from server import Core
from tests.deploy.tools import DASHBOARD, DEPLOY, RULES, metric_names, promtool, run
from tests.gateway.conftest import serve_gateway

pytestmark = pytest.mark.timeout(60)


async def _traffic_then_scrape(core: Core) -> tuple[str, str]:
    """Create a project, write an episode over SSE, hit an error; then both expositions."""
    async with serve_gateway(f"127.0.0.1:{core.grpc_port}") as http:
        # Ten-minute episodes: long enough for the unpaced writer to send several chunks,
        # so the inter-token histogram sees gaps.
        created = await http.post(
            "/v1/projects", json={"title": "Night Shift", "targetEpisodeMinutes": 10}
        )
        assert created.status_code == 201, created.text
        project = created.json()["name"]
        async with http.stream(
            "POST",
            f"/v1/{project}/generations",
            json={"title": "Pilot"},
            headers={"Accept": "text/event-stream"},
        ) as stream:
            assert stream.status_code == 200
            lines = [line async for line in stream.aiter_lines()]
        assert "event: completed" in lines
        assert (await http.get("/v1/projects/missing")).status_code == 404
        gateway_text = (await http.get("/metrics")).text
    async with httpx.AsyncClient() as client:
        core_text = (await client.get(f"http://127.0.0.1:{core.metrics_port}/metrics")).text
    return core_text, gateway_text


def _exported(text: str) -> set[str]:
    """Names a query may use: every sample name, and every declared family's series names."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def _sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _rule_expressions() -> list[str]:
    document = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _canary_expressions() -> list[str]:
    path = DEPLOY / "k8s" / "overlays" / "prod" / "analysis-templates.yaml"
    return [
        metric["provider"]["prometheus"]["query"]
        for template in yaml.safe_load_all(path.read_text())
        for metric in template["spec"]["metrics"]
    ]


async def test_both_expositions_pass_promtool_and_serve_the_rules_and_dashboard(
    core: Core,
) -> None:
    core_text, gateway_text = await _traffic_then_scrape(core)

    for text in (core_text, gateway_text):
        checked = run([promtool(), "check", "metrics"], stdin=text)
        assert checked.returncode == 0 and checked.stdout + checked.stderr == "", (
            checked.stdout + checked.stderr
        )

    # The traffic was measured for real at each hop.
    assert _sample(gateway_text, "scriptgen_gateway_time_to_first_event_seconds_count") >= 1
    assert _sample(core_text, "scriptgen_core_time_to_first_event_seconds_count") >= 1
    assert _sample(core_text, "scriptgen_time_to_first_token_seconds_count") >= 1
    assert _sample(core_text, "scriptgen_inter_token_latency_seconds_count") >= 1
    assert _sample(core_text, "scriptgen_tokens_total") > 0
    assert _sample(core_text, "scriptgen_jobs_capacity") > 0
    assert (
        'scriptgen_http_requests_total{method="GET",route="/v1/projects/{project}",status="404"}'
        in (gateway_text)
    )
    assert 'scriptgen_grpc_requests_total{code="NOT_FOUND",method="GetProject"}' in core_text

    exported = _exported(core_text) | _exported(gateway_text)
    for source, expressions in (
        ("alert rules", _rule_expressions()),
        ("dashboard", _dashboard_expressions()),
        ("canary analysis", _canary_expressions()),
    ):
        missing = metric_names(expressions) - exported
        assert missing == set(), f"the {source} read series no process exports: {missing}"


async def test_rejection_counters_exist_on_both_processes(core: Core) -> None:
    core_text, gateway_text = await _traffic_then_scrape(core)
    for text in (core_text, gateway_text):
        assert "# TYPE scriptgen_auth_rejections_total counter" in text
        assert "# TYPE scriptgen_rate_limit_rejections_total counter" in text
