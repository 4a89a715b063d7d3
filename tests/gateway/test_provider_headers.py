"""Per-request provider control through the gateway: the x-* headers reach the core's router."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


async def _project(client: Client) -> str:
    response = await client.post("/v1/projects", json={"title": "Night Shift"})
    assert response.status == 201
    name: str = (await response.json())["name"]
    return name


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-preferred-provider", "nonesuch"),
        ("x-disabled-providers", "synthetic,nonesuch"),
        ("x-feature-flags", "warp-drive"),
        ("x-disabled-providers", "synthetic"),  # disables every provider of the chain
    ],
)
async def test_bad_provider_control_is_400_naming_the_header(
    client: Client, header: str, value: str
) -> None:
    project = await _project(client)
    response = await client.post(
        f"/v1/{project}/generations", json={"title": "Pilot"}, headers={header: value}
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    fields = [
        violation["field"]
        for detail in error["details"]
        if detail["@type"].endswith("google.rpc.BadRequest")
        for violation in detail["fieldViolations"]
    ]
    assert header in fields


async def test_known_provider_control_is_accepted_and_reaches_the_job(client: Client) -> None:
    project = await _project(client)
    response = await client.post(
        f"/v1/{project}/generations",
        json={"title": "Pilot"},
        headers={
            "x-preferred-provider": "synthetic",
            "x-feature-flags": "polish",
            "Accept": "text/event-stream",
        },
    )
    assert response.status == 200
    body = await response.text()
    assert "event: completed" in body
    assert '"providers":["synthetic"]' in body.replace(" ", "")
