"""Headers sent more than once: list headers are joined, single-valued ones must agree.

RFC 9110 §5.3: the lines of a comma-separated list header are one list; any other header
repeated with different values is refused (400 naming it), never read as its first line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway import create_app, state
from server import Core, SyntheticConfig
from server.config import RouterConfig, build_providers
from tests.conftest import CoreFactory
from tests.gateway.conftest import gateway_config
from tests.standins.llm_standin import LlmStandin, running_standin

Client = TestClient[Any, Any]
Headers = list[tuple[str, str]]


def _violations(body: dict[str, Any]) -> dict[str, str]:
    return {
        violation["field"]: violation["description"]
        for detail in body["error"]["details"]
        for violation in detail.get("fieldViolations", [])
    }


def _reason(body: dict[str, Any]) -> str:
    reasons = [d["reason"] for d in body["error"]["details"] if "reason" in d]
    return reasons[0] if reasons else ""


@pytest.fixture
async def standin() -> AsyncIterator[LlmStandin]:
    async with running_standin() as server:
        yield server


@pytest.fixture
async def three_providers(start_core: CoreFactory, standin: LlmStandin) -> AsyncIterator[Client]:
    """A gateway on a core whose chain is openai, anthropic, synthetic."""
    providers = build_providers(
        chain="openai,anthropic,synthetic",
        openai_api_key="test",
        openai_base_url=f"{standin.url}/v1",
        openai_model="gpt-test",
        anthropic_api_key="test",
        anthropic_base_url=standin.url,
        anthropic_model="claude-test",
        router=RouterConfig(max_attempts=1),
    )
    core: Core = await start_core(
        SyntheticConfig(first_token_seconds=0.0, tokens_per_second=0.0), providers=providers
    )
    app = create_app(gateway_config(f"127.0.0.1:{core.grpc_port}"))
    async with TestClient(TestServer(app)) as client:
        await app[state.READINESS].wait_for(True)
        yield client


async def _project(client: Client) -> str:
    response = await client.post("/v1/projects", json={"title": "Night Shift"})
    assert response.status == 201, await response.text()
    name: str = (await response.json())["name"]
    return name


async def test_repeated_disabled_providers_all_reach_the_core(
    three_providers: Client, standin: LlmStandin
) -> None:
    project = await _project(three_providers)
    response = await three_providers.post(
        f"/v1/{project}/generations",
        json={"title": "Pilot"},
        headers=[
            ("Accept", "text/event-stream"),
            ("X-Disabled-Providers", "openai"),
            ("X-Disabled-Providers", "anthropic"),
        ],
    )
    assert response.status == 200, await response.text()
    body = await response.text()
    assert "event: completed" in body
    assert '"providers":["synthetic"]' in body.replace(" ", "")  # the queued event's chain
    assert not standin.requests, "a disabled provider was called"


async def test_repeated_feature_flags_are_one_list(client: Client) -> None:
    project = await _project(client)
    response = await client.post(
        f"/v1/{project}/generations",
        json={"title": "Pilot"},
        headers=[("X-Feature-Flags", "polish"), ("X-Feature-Flags", "warp-drive")],
    )
    assert response.status == 400, await response.text()
    assert "x-feature-flags" in _violations(await response.json())


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("X-Preferred-Provider", "synthetic", "openai"),
        ("Idempotency-Key", "one", "two"),
        ("X-Request-Id", "req-1", "req-2"),
        ("Last-Event-ID", "1", "2"),
        ("Authorization", "Bearer a", "Bearer b"),
    ],
)
async def test_a_single_valued_header_repeated_with_another_value_is_named(
    client: Client, name: str, first: str, second: str
) -> None:
    project = await _project(client)
    for method, url in (
        ("POST", f"/v1/{project}/generations"),
        ("POST", "/v1/projects"),
        ("GET", "/v1/generations/g1/events"),
    ):
        response = await client.request(
            method, url, json={"title": "Pilot"}, headers=[(name, first), (name, second)]
        )
        assert response.status == 400, (url, await response.text())
        body = await response.json()
        assert _reason(body) == "INVALID_HEADER"
        assert set(_violations(body)) == {name}, url
        assert response.headers["X-Request-Id"] not in (first, second)


async def test_a_single_valued_header_repeated_with_the_same_value_is_that_value(
    client: Client,
) -> None:
    headers = [
        ("Idempotency-Key", "same-key"),
        ("Idempotency-Key", "same-key"),
        ("X-Request-Id", "req-same"),
        ("X-Request-Id", "req-same"),
    ]
    first = await client.post("/v1/projects", json={"title": "Once"}, headers=headers)
    assert first.status == 201, await first.text()
    assert first.headers["X-Request-Id"] == "req-same"
    again = await client.post("/v1/projects", json={"title": "Once"}, headers=headers)
    assert (await again.json())["name"] == (await first.json())["name"]


async def test_a_request_id_is_kept_up_to_128_characters_and_refused_beyond(
    client: Client,
) -> None:
    longest = "r" * 128
    kept = await client.get("/v1/projects", headers={"X-Request-Id": longest})
    assert kept.status == 200
    assert kept.headers["X-Request-Id"] == longest
    refused = await client.get("/v1/projects", headers={"X-Request-Id": longest + "r"})
    assert refused.status == 400
    body = await refused.json()
    assert _reason(body) == "INVALID_HEADER"
    assert set(_violations(body)) == {"X-Request-Id"}
    assert len(refused.headers["X-Request-Id"]) == 32  # a new id answers the refusal
    # An empty id (or one not printable ASCII) is still replaced, not refused: a label.
    replaced = await client.get("/v1/projects", headers={"X-Request-Id": ""})
    assert replaced.status == 200
    assert len(replaced.headers["X-Request-Id"]) == 32
