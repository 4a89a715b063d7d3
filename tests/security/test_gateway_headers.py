"""Gateway hardening: CORS only for configured origins, security headers on every answer.

The secure gateway of conftest allows one origin, https://writers.example.
"""

from __future__ import annotations

import httpx
import pytest

ALLOWED = "https://writers.example"
REFUSED = "https://evil.example"
HARDENING = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def _vary(response: httpx.Response) -> set[str]:
    return {
        part.strip().lower()
        for value in response.headers.get_list("vary")
        for part in value.split(",")
    }


async def test_an_allowed_origin_gets_cors_headers(http: httpx.AsyncClient, alice_key: str) -> None:
    answer = await http.get(
        "/v1/projects", headers={"Origin": ALLOWED, "Authorization": f"Bearer {alice_key}"}
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    exposed = {
        h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")
    }
    assert {"x-ratelimit-remaining", "retry-after", "x-request-id", "link"} <= exposed
    assert "origin" in _vary(answer)
    # Credentials are bearer tokens, never cookies.
    assert "access-control-allow-credentials" not in answer.headers
    # An error answer to that origin is readable by its page too.
    refused = await http.get("/v1/projects", headers={"Origin": ALLOWED})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize(
    "origin", [REFUSED, "null", ALLOWED + ".evil.example", "http://writers.example"]
)
async def test_other_origins_get_no_cors_headers(
    http: httpx.AsyncClient, alice_key: str, origin: str
) -> None:
    answer = await http.get(
        "/v1/projects", headers={"Origin": origin, "Authorization": f"Bearer {alice_key}"}
    )
    assert answer.status_code == 200  # the server answers; the browser will not let it be read
    assert not [name for name in answer.headers if name.lower().startswith("access-control-")]


async def test_a_preflight_of_an_allowed_origin_is_answered(http: httpx.AsyncClient) -> None:
    answer = await http.options(
        "/v1/projects",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    methods = {m.strip() for m in answer.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
    assert int(answer.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in answer.headers
    assert "origin" in _vary(answer)


async def test_a_preflight_of_another_origin_is_refused(http: httpx.AsyncClient) -> None:
    answer = await http.options(
        "/v1/projects",
        headers={"Origin": REFUSED, "Access-Control-Request-Method": "DELETE"},
    )
    assert answer.status_code == 403
    assert not [name for name in answer.headers if name.lower().startswith("access-control-")]
    # The usual JSON error, so a tool (or a person with curl) reads why.
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (403, "PERMISSION_DENIED")
    assert "origin" in error["message"].lower()
    (info,) = [d for d in error["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert (info["reason"], info["domain"]) == ("ORIGIN_NOT_ALLOWED", "scriptgen.dev")
    for name, value in HARDENING.items():
        assert answer.headers[name] == value, name
    assert "origin" in _vary(answer)


async def test_the_page_carries_its_csp_and_the_hardening_headers(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name, value in HARDENING.items():
        assert page.headers[name] == value, name
    policy = {
        part.strip().split(" ", 1)[0]: part.strip()
        for part in page.headers["content-security-policy"].split(";")
    }
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert policy["default-src"] == "default-src 'none'"
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    script = await http.get("/app.js")
    assert script.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/projects", 200),
        ("GET", "/v1/projects", 401),
        ("GET", "/v1/projects/nowhere", 404),
        ("GET", "/v1/no-such-route", 404),
        ("POST", "/v1/projects", 400),
        ("GET", "/healthz", 200),
        ("GET", "/openapi.json", 200),
    ],
)
async def test_json_answers_carry_the_hardening_headers(
    http: httpx.AsyncClient, alice_key: str, method: str, path: str, status: int
) -> None:
    headers = {} if status == 401 else {"Authorization": f"Bearer {alice_key}"}
    answer = await http.request(
        method, path, headers=headers, content=b"[" if method == "POST" else None
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    for name, value in HARDENING.items():
        assert answer.headers[name] == value, (name, path)
    assert "traceback" not in answer.text.lower()


async def test_event_streams_carry_the_hardening_headers(
    http: httpx.AsyncClient, alice_key: str
) -> None:
    headers = {"Authorization": f"Bearer {alice_key}"}
    project = (await http.post("/v1/projects", json={"title": "Headers"}, headers=headers)).json()
    async with http.stream(
        "POST",
        f"/v1/{project['name']}/generations",
        json={"title": "Pilot"},
        headers={**headers, "Accept": "text/event-stream", "Origin": ALLOWED},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for name, value in HARDENING.items():
            assert stream.headers[name] == value, name
        assert stream.headers["access-control-allow-origin"] == ALLOWED
        body = "".join([line async for line in stream.aiter_lines()])
    assert "event: completed" in body
