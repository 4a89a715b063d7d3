"""Job tokens: a plain EventSource follows (and resumes) one job by its eventsUrl alone."""

from __future__ import annotations

import json
import logging
import re
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from httpx_sse import aconnect_sse

from server import Core
from server.auth.job_tokens import JobTokens


def test_tokens_are_signed_scoped_and_expire() -> None:
    tokens = JobTokens(b"k" * 32, lifetime_seconds=60)
    token = tokens.issue("generations/g1", "alice", now=1000)
    grant = tokens.check(token, now=1059)
    assert grant is not None and (grant.generation, grant.tenant) == ("generations/g1", "alice")
    assert tokens.check(token, now=1061) is None
    assert JobTokens(b"x" * 32, 60).check(token, now=1000) is None
    payload, signature = token.removeprefix("sgjt.").split(".")
    assert tokens.check(f"sgjt.{payload}x.{signature}", now=1000) is None
    assert tokens.check("sgjt.", now=1000) is None
    assert tokens.check("sgjt.!!!.???", now=1000) is None


async def _start(http: httpx.AsyncClient, key: str) -> tuple[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    project = (await http.post("/v1/projects", json={"title": "T"}, headers=headers)).json()
    answer = await http.post(
        f"/v1/{project['name']}/generations", json={"title": "Pilot"}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["generation"]["name"], answer.json()["eventsUrl"]


async def test_the_events_url_alone_follows_and_resumes_the_job(
    http: httpx.AsyncClient, alice_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    name, events_url = await _start(http, alice_key)
    token = parse_qs(urlsplit(events_url).query)["access_token"][0]
    assert token.startswith("sgjt.")
    async with aconnect_sse(http, "GET", events_url) as source:
        assert source.response.status_code == 200
        frames = [sse async for sse in source.aiter_sse()]
    assert frames[-1].event == "completed"
    # A resumed EventSource sends Last-Event-ID to the same URL.
    async with aconnect_sse(http, "GET", events_url, headers={"Last-Event-ID": "2"}) as source:
        resumed = [sse async for sse in source.aiter_sse() if sse.id]
    assert resumed[0].id == "3" and resumed[-1].event == "completed"
    # Tokens never reach the logs (the access log has the path, not the query).
    logged = "\n".join(
        record.getMessage() + json.dumps(vars(record), default=str)
        for record in caplog.records
        if not record.name.startswith("httpx")  # the test's own client, not the service
    )
    assert token not in logged and alice_key not in logged
    assert name in logged


async def test_a_job_token_does_nothing_else(http: httpx.AsyncClient, alice_key: str) -> None:
    first, first_url = await _start(http, alice_key)
    second, _ = await _start(http, alice_key)
    token = parse_qs(urlsplit(first_url).query)["access_token"][0]
    other = await http.get(f"/v1/{second}/events", params={"access_token": token})
    assert other.status_code == 403
    assert other.json()["error"]["status"] == "PERMISSION_DENIED"
    as_header = await http.get(f"/v1/{first}", headers={"Authorization": f"Bearer {token}"})
    assert as_header.status_code == 403
    elsewhere = await http.get(f"/v1/{first}", params={"access_token": token})
    assert elsewhere.status_code == 400  # not a parameter of that route
    # Another signature, whatever the real one is (replacing its end with a fixed "AA"
    # forged nothing in the one run in 1024 whose signature already ended so).
    payload, signature = token.rsplit(".", 1)
    forged_token = f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    assert forged_token != token
    forged = await http.get(f"/v1/{first}/events", params={"access_token": forged_token})
    assert forged.status_code == 401


async def test_an_expired_token_is_refused(
    secure_core: Core, http: httpx.AsyncClient, alice_key: str
) -> None:
    name, _ = await _start(http, alice_key)
    assert secure_core.guard.tokens is not None
    old = secure_core.guard.tokens.issue(name, "alice", now=time.time() - 10_000)
    answer = await http.get(f"/v1/{name}/events", params={"access_token": old})
    assert answer.status_code == 401
    assert answer.json()["error"]["status"] == "UNAUTHENTICATED"


async def test_without_a_key_http_is_401_and_with_a_bad_one_too(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/v1/projects")).status_code == 401
    bad = await http.get("/v1/projects", headers={"Authorization": "Bearer sg_nope"})
    assert bad.status_code == 401
    assert bad.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert (await http.get("/healthz")).status_code == 200


async def test_asking_for_the_job_with_a_key_renews_its_events_url(
    secure_core: Core, http: httpx.AsyncClient, alice_key: str
) -> None:
    name, first_url = await _start(http, alice_key)
    asked = await http.get(f"/v1/{name}", headers={"Authorization": f"Bearer {alice_key}"})
    assert asked.status_code == 200
    assert asked.headers["Cache-Control"] == "no-store"
    link = re.fullmatch(r'<([^>]+)>; rel="events"', asked.headers["Link"])
    assert link is not None
    renewed = link.group(1)
    assert urlsplit(renewed).path == urlsplit(first_url).path == f"/v1/{name}/events"
    token = parse_qs(urlsplit(renewed).query)["access_token"][0]
    assert secure_core.guard.tokens is not None
    grant = secure_core.guard.tokens.check(token)
    assert grant is not None and (grant.generation, grant.tenant) == (name, "alice")
    async with aconnect_sse(http, "GET", renewed, headers={"Last-Event-ID": "1"}) as source:
        assert source.response.status_code == 200
        frames = [sse async for sse in source.aiter_sse() if sse.id]
    assert frames[0].id == "2" and frames[-1].event == "completed"
    # Only a key renews: a job token's own lifetime still bounds it.
    job_token = parse_qs(urlsplit(first_url).query)["access_token"][0]
    events = await http.get(f"/v1/{name}/events", params={"access_token": job_token})
    assert "Link" not in events.headers
    assert events.status_code == 200


async def test_another_tenant_asking_for_the_job_gets_no_events_url(
    http: httpx.AsyncClient, alice_key: str, bob_key: str
) -> None:
    name, _ = await _start(http, alice_key)
    asked = await http.get(f"/v1/{name}", headers={"Authorization": f"Bearer {bob_key}"})
    assert asked.status_code == 404
    assert "Link" not in asked.headers
