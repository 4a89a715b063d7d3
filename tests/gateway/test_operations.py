"""Operator and tool routes: /metrics, /openapi.json, the web page."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

Client = TestClient[Any, Any]


async def _document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


def _validator(document: dict[str, Any], schema_name: str) -> OAS31Validator:
    root = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    return OAS31Validator(root)


def _conforms(document: dict[str, Any], schema_name: str, instance: Any) -> None:
    _validator(document, schema_name).validate(instance)


async def test_openapi_document_is_valid_openapi_3_1(client: Client) -> None:
    document = await _document(client)
    assert document["openapi"].startswith("3.1")
    validate(document)


async def test_openapi_documents_every_route(client: Client) -> None:
    document = await _document(client)
    assert client.app is not None
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    routed = {
        (route.resource.canonical, route.method)
        for route in client.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert routed - documented == set()
    assert documented - routed == set()


async def test_openapi_schemas_follow_the_protos(client: Client) -> None:
    document = await _document(client)
    schemas = document["components"]["schemas"]
    project = schemas["Project"]["properties"]
    assert project["createTime"] == {"type": "string", "format": "date-time"}
    assert project["type"] == {"$ref": "#/components/schemas/ProjectType"}
    assert "PROJECT_TYPE_WEB_SERIES" in schemas["ProjectType"]["enum"]
    event = schemas["GenerationEvent"]["properties"]
    assert event["textDelta"] == {"$ref": "#/components/schemas/GenerationEvent.TextDelta"}
    assert event["sequence"]["format"] == "int64"
    assert "parent" not in schemas["GenerateScriptBody"]["properties"]


async def test_real_answers_conform_to_the_document(client: Client) -> None:
    document = await _document(client)
    created = await (await client.post("/v1/projects", json={"title": "Night Shift"})).json()
    _conforms(document, "Project", created)
    listed = await (await client.get("/v1/projects")).json()
    _conforms(document, "ListProjectsResponse", listed)
    started = await (
        await client.post(f"/v1/{created['name']}/generations", json={"title": "Pilot"})
    ).json()
    _conforms(document, "CreatedGeneration", started)
    missing = await (await client.get("/v1/projects/p-missing")).json()
    _conforms(document, "Error", missing)
    # The schema refuses unknown fields, as the gateway does.
    assert not _validator(document, "Project").is_valid({**created, "colour": "red"})


async def test_metrics_are_prometheus_text_with_the_gateways_series(client: Client) -> None:
    await client.get("/v1/projects")
    await client.get("/v1/projects/p-missing")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = {
        family.name: family for family in text_string_to_metric_families(await response.text())
    }
    for name in (
        "scriptgen_http_requests",
        "scriptgen_http_request_duration_seconds",
        "scriptgen_gateway_time_to_first_event_seconds",
        "scriptgen_gateway_active_streams",
        "scriptgen_gateway_ready",
        "scriptgen_gateway_readiness_transitions",
    ):
        assert name in families, name
    requests = {
        (sample.labels["route"], sample.labels["method"], sample.labels["status"]): sample.value
        for sample in families["scriptgen_http_requests"].samples
        if sample.name.endswith("_total")
    }
    assert requests[("/v1/projects", "GET", "200")] == 1
    assert requests[("/v1/projects/{project}", "GET", "404")] == 1
    ready = families["scriptgen_gateway_ready"].samples[0].value
    assert ready == 1


async def test_time_to_first_event_is_observed(client: Client) -> None:
    created = await (await client.post("/v1/projects", json={"title": "Night Shift"})).json()
    started = await (
        await client.post(f"/v1/{created['name']}/generations", json={"title": "Pilot"})
    ).json()
    await (await client.get(started["eventsUrl"])).text()
    metrics = await (await client.get("/metrics")).text()
    match = re.search(
        r'^scriptgen_gateway_time_to_first_event_seconds_count\{route="events"\} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert match is not None
    assert float(match.group(1)) == 1


async def test_web_page_is_served_under_a_strict_csp(client: Client) -> None:
    page = await client.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    html = await page.text()
    assert '<script type="module" src="/app.js"></script>' in html
    assert "<script>" not in html
    assert " style=" not in html
    script = await client.get("/app.js")
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert "innerHTML" not in await script.text()
    follow = await client.get("/modules/follow.js")
    assert follow.headers["Content-Type"].startswith("text/javascript")
    assert "new EventSource(" in await follow.text()
    assert (await client.get("/modules/nope.js")).status == 404
    assert (await client.get("/app.css")).status == 200


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
