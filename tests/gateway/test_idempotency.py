"""The Idempotency-Key header: POST /v1/projects and POST …/generations retried safely."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


def _reasons(body: dict[str, Any]) -> list[str]:
    return [detail.get("reason", "") for detail in body["error"]["details"]]


def _violations(body: dict[str, Any]) -> list[str]:
    return [
        violation["field"]
        for detail in body["error"]["details"]
        for violation in detail.get("fieldViolations", [])
    ]


async def test_a_retried_project_create_returns_the_same_project(client: Client) -> None:
    first = await client.post("/v1/projects", json={"title": "Night Shift"}, headers=_key("p-1"))
    assert first.status == 201, await first.text()
    created = await first.json()
    retry = await client.post("/v1/projects", json={"title": "Night Shift"}, headers=_key("p-1"))
    assert retry.status == 201
    assert await retry.json() == created
    assert retry.headers["Location"] == f"/v1/{created['name']}"
    listed = await (await client.get("/v1/projects")).json()
    assert [project["name"] for project in listed["projects"]] == [created["name"]]

    other = await client.post("/v1/projects", json={"title": "Day Shift"}, headers=_key("p-1"))
    assert other.status == 409
    body = await other.json()
    assert body["error"]["status"] == "ALREADY_EXISTS"
    assert "REQUEST_ID_REUSED" in _reasons(body)


async def test_a_retried_generation_start_returns_the_same_job(client: Client) -> None:
    project = (await (await client.post("/v1/projects", json={"title": "N"})).json())["name"]
    url = f"/v1/{project}/generations"
    first = await client.post(url, json={"title": "Pilot"}, headers=_key("g-1"))
    assert first.status == 201, await first.text()
    job = (await first.json())["generation"]
    retry = await client.post(url, json={"title": "Pilot"}, headers=_key("g-1"))
    assert retry.status == 201
    assert (await retry.json())["generation"]["name"] == job["name"]
    # The key in the body and the header at once is fine when they agree.
    both = await client.post(url, json={"title": "Pilot", "requestId": "g-1"}, headers=_key("g-1"))
    assert (await both.json())["generation"]["name"] == job["name"]

    other = await client.post(url, json={"title": "Finale"}, headers=_key("g-1"))
    assert other.status == 409
    assert "REQUEST_ID_REUSED" in _reasons(await other.json())


async def test_a_header_and_a_body_key_that_differ_are_refused(client: Client) -> None:
    project = (await (await client.post("/v1/projects", json={"title": "N"})).json())["name"]
    response = await client.post(
        f"/v1/{project}/generations",
        json={"title": "Pilot", "requestId": "body-key"},
        headers=_key("header-key"),
    )
    assert response.status == 400
    assert "requestId" in _violations(await response.json())


@pytest.mark.parametrize("value", ["", "has space", "x" * 101, "slash/no", "semi;colon"])
@pytest.mark.parametrize("route", ["projects", "generations"])
async def test_an_invalid_key_names_the_header(client: Client, value: str, route: str) -> None:
    project = (await (await client.post("/v1/projects", json={"title": "N"})).json())["name"]
    url = "/v1/projects" if route == "projects" else f"/v1/{project}/generations"
    response = await client.post(url, json={"title": "T"}, headers=_key(value))
    assert response.status == 400
    body = await response.json()
    assert "INVALID_HEADER" in _reasons(body)
    assert "Idempotency-Key" in _violations(body)
