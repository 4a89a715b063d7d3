"""Every class of bad input is a 400 naming what is wrong — never a 500."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway import create_app
from tests.gateway.conftest import gateway_config, serve_gateway

Client = TestClient[Any, Any]


async def _violations(response: Any, reason: str | None = None) -> dict[str, str]:
    """Assert a Google-style 400 and return its field violations by field."""
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == 400
    assert error["status"] in {"INVALID_ARGUMENT", "OUT_OF_RANGE"}
    assert error["message"]
    by_type = {detail["@type"].rsplit("/", 1)[1]: detail for detail in error["details"]}
    if reason is not None:
        assert by_type["google.rpc.ErrorInfo"]["reason"] == reason
        assert by_type["google.rpc.ErrorInfo"]["domain"] == "scriptgen.dev"
    violations = by_type["google.rpc.BadRequest"]["fieldViolations"]
    return {violation["field"]: violation["description"] for violation in violations}


@pytest.fixture
async def project(client: Client) -> str:
    response = await client.post("/v1/projects", json={"title": "Night Shift"})
    name: str = (await response.json())["name"]
    return name


@pytest.mark.parametrize(
    "raw",
    [b"{", b"{'title': 'x'}", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000],
    ids=["truncated", "single-quotes", "not-utf8", "deeply-nested"],
)
async def test_malformed_json(client: Client, raw: bytes) -> None:
    response = await client.post(
        "/v1/projects", data=raw, headers={"Content-Type": "application/json"}
    )
    assert "body" in await _violations(response, "MALFORMED_BODY")


@pytest.mark.parametrize("body", [b"[]", b'"title"', b"42", b"null"])
async def test_body_that_is_not_an_object(client: Client, body: bytes) -> None:
    response = await client.post(
        "/v1/projects", data=body, headers={"Content-Type": "application/json"}
    )
    assert "body" in await _violations(response, "MALFORMED_BODY")


async def test_unknown_fields_are_named(client: Client, project: str) -> None:
    response = await client.post("/v1/projects", json={"title": "X", "genre": "noir"})
    assert set(await _violations(response, "INVALID_FIELD")) == {"project.genre"}
    generation = await client.post(
        f"/v1/{project}/generations", json={"title": "Pilot", "episodeCount": 3}
    )
    assert set(await _violations(generation, "INVALID_FIELD")) == {"episodeCount"}
    with_parent = await client.post(
        f"/v1/{project}/generations", json={"title": "Pilot", "parent": project}
    )
    assert set(await _violations(with_parent)) == {"parent"}
    cancel = await client.post("/v1/generations/g1:cancel", json={"force": True})
    assert set(await _violations(cancel)) == {"force"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": 42}, "project.title"),
        ({"title": "X", "type": "PROJECT_TYPE_OPERA"}, "project.type"),
        ({"title": "X", "type": 3.5}, "project.type"),
        ({"title": "X", "createTime": "yesterday"}, "project.create_time"),
        ({"title": "X", "episodeCount": "many"}, "project.episode_count"),
        ({"title": ["X"]}, "project.title"),
    ],
)
async def test_wrong_types_are_named(client: Client, body: dict[str, Any], field: str) -> None:
    response = await client.post("/v1/projects", json=body)
    assert set(await _violations(response, "INVALID_FIELD")) == {field}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        # A lone surrogate (an unpaired \uD800-\uDFFF escape) is not text.
        (b'{"title": "\\ud800"}', "project.title"),
        (b'{"title": "X", "tone": "a\\udfff"}', "project.tone"),
        (b'{"title": "X", "type": "\\ud800"}', "project.type"),
        (b'{"title": "X", "createTime": "\\ud800"}', "project.create_time"),
        (b'{"title": "X", "episodeCount": "\\ud800"}', "project.episode_count"),
        # In a key: named with the escape, as it cannot be sent as text.
        (b'{"\\ud800": 1}', "project.\\ud800"),
        (b'{"title": "X", "createTime": {"\\ud83d": 2}}', "project.create_time"),
    ],
)
async def test_a_lone_surrogate_is_named(client: Client, raw: bytes, field: str) -> None:
    response = await client.post(
        "/v1/projects", data=raw, headers={"Content-Type": "application/json"}
    )
    assert set(await _violations(response, "INVALID_FIELD")) == {field}


async def test_a_surrogate_pair_is_text(client: Client) -> None:
    raw = b'{"title": "Night \\ud83d\\ude00 Shift"}'
    response = await client.post(
        "/v1/projects", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["title"] == "Night \U0001f600 Shift"


async def test_wrong_types_in_a_generation_request(client: Client, project: str) -> None:
    response = await client.post(
        f"/v1/{project}/generations", json={"title": "Pilot", "detach": "yes"}
    )
    assert set(await _violations(response, "INVALID_FIELD")) == {"detach"}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_its_content_encoding_is_named(
    core_target: str, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve_gateway(core_target) as http:
        response = await http.post(
            "/v1/projects",
            content=b'{"title": "Night Shift"}',  # not compressed at all
            headers={"Content-Type": "application/json", "Content-Encoding": encoding},
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    by_type = {detail["@type"].rsplit("/", 1)[1]: detail for detail in error["details"]}
    assert by_type["google.rpc.ErrorInfo"]["reason"] == "MALFORMED_BODY"
    fields = [v["field"] for v in by_type["google.rpc.BadRequest"]["fieldViolations"]]
    assert fields == ["body"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_an_encoding_the_gateway_cannot_decode_is_a_json_400(
    core_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`br` without the Brotli package: aiohttp refuses it with the headers, before any
    route (gateway.http_errors answers it) — a 400, not a traceback."""
    async with serve_gateway(core_target) as http:
        response = await http.post(
            "/v1/projects",
            content=b'{"title": "Night Shift"}',
            headers={"Content-Type": "application/json", "Content-Encoding": "br"},
        )
    # Where Brotli is installed, the body (not compressed) is a MALFORMED_BODY instead.
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_is_read(client: Client, encoding: str) -> None:
    raw = b'{"title": "Night Shift"}'
    response = await client.post(
        "/v1/projects",
        data=gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw),
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert response.status == 201, await response.text()


async def test_a_body_cut_short_by_a_leaving_client_is_no_internal_error(
    core_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Fewer bytes than Content-Length, then the client closes: nothing logs a 500."""
    async with serve_gateway(core_target) as http:
        with caplog.at_level(logging.DEBUG):
            _, writer = await asyncio.open_connection(http.base_url.host, http.base_url.port)
            writer.write(
                b"POST /v1/projects HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"title": "Ni'
            )
            await writer.drain()
            await asyncio.sleep(0.2)  # the handler is waiting for the rest of the body
            writer.close()
            await writer.wait_closed()
            for _ in range(100):
                if any(r.name == "scriptgen.gateway.access" for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
        (access,) = [r for r in caplog.records if r.name == "scriptgen.gateway.access"]
        assert access.getMessage() == "POST /v1/projects 499"  # the client closed
        problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not problems, [r.getMessage() for r in problems]
        assert (await http.get("/v1/projects")).status_code == 200


@pytest.mark.parametrize("declared_length", [True, False], ids=["content-length", "chunked"])
async def test_body_too_large(core_target: str, declared_length: bool) -> None:
    limit = 1000
    app = create_app(gateway_config(core_target, max_body_bytes=limit))
    huge = b'{"title": "' + b"x" * limit + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(huge), 100):
            yield huge[start : start + 100]

    async with TestClient(TestServer(app)) as small:
        response = await small.post(
            "/v1/projects",
            data=huge if declared_length else chunks(),
            headers={"Content-Type": "application/json"},
        )
        violations = await _violations(response, "MALFORMED_BODY")
        assert "body" in violations
        assert str(limit) in violations["body"]
        fits = await small.post("/v1/projects", json={"title": "x" * 100})
        assert fits.status == 201


async def test_a_form_post_is_refused(client: Client) -> None:
    response = await client.post("/v1/projects", data={"title": "x"})
    assert set(await _violations(response, "UNSUPPORTED_MEDIA_TYPE")) == {"Content-Type"}


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/v1/projects/-leading-dash", "project"),
        ("/v1/projects/has%20space", "project"),
        ("/v1/projects/a%2Fb", "project"),
        ("/v1/projects/x/episodes/~1", "episode"),
        ("/v1/generations/bad!id", "generation"),
        ("/v1/generations/g1:uncancel", "generation"),
        ("/v1/generations/" + "g" * 200, "generation"),
    ],
)
async def test_invalid_resource_ids_in_the_path(client: Client, url: str, field: str) -> None:
    response = await client.get(url)
    assert set(await _violations(response, "INVALID_RESOURCE_ID")) == {field}


async def test_resource_ids_the_core_rejects_are_400_too(client: Client, project: str) -> None:
    response = await client.get(f"/v1/{project}/episodes/first")
    assert "name" in await _violations(response)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("pageSize=ten", "pageSize"),
        ("page_size=1.5", "pageSize"),
        ("pageSize=99999999999", "pageSize"),
        # More digits than int() takes (4300): out of range, not a ValueError.
        ("pageSize=" + "9" * 5000, "pageSize"),
        ("pageSize=-" + "9" * 5000, "pageSize"),
        ("pageSize=1_000", "pageSize"),
        ("pageSize=1&page_size=2", "pageSize"),
        ("pageSize=2&colour=red", "colour"),
    ],
)
async def test_invalid_query_parameters(client: Client, query: str, field: str) -> None:
    response = await client.get(f"/v1/projects?{query}")
    assert set(await _violations(response, "INVALID_QUERY_PARAMETER")) == {field}


@pytest.mark.parametrize("page_size", ["-1", "1001"])
async def test_out_of_range_page_size_is_the_cores_400(
    client: Client, project: str, page_size: str
) -> None:
    for url in (
        f"/v1/projects?pageSize={page_size}",
        f"/v1/{project}/episodes?pageSize={page_size}",
        f"/v1/{project}/generations?pageSize={page_size}",
    ):
        violations = await _violations(await client.get(url))
        assert "page_size" in violations, url


async def test_invalid_boolean_query_parameter(client: Client, project: str) -> None:
    response = await client.delete(f"/v1/{project}?force=maybe")
    assert set(await _violations(response, "INVALID_QUERY_PARAMETER")) == {"force"}


@pytest.mark.parametrize(
    "value", ["abc", "-1", "-0", "1.5", "9" * 30, "١٢", "9" * 5000, "0" * 5000 + "1" * 20]
)
async def test_invalid_last_event_id(client: Client, value: str) -> None:
    by_header = await client.get(
        "/v1/generations/g1/events", headers={"Last-Event-ID": value.encode().decode("latin-1")}
    )
    assert set(await _violations(by_header, "INVALID_HEADER")) == {"Last-Event-ID"}
    by_query = await client.get("/v1/generations/g1/events", params={"lastEventId": value})
    assert set(await _violations(by_query, "INVALID_QUERY_PARAMETER")) == {"lastEventId"}


@pytest.mark.parametrize("value", ["0" * 5000 + "7", "7"])
async def test_leading_zeros_do_not_count_as_digits(client: Client, value: str) -> None:
    """A Last-Event-ID is a number; only its significant digits are bounded."""
    response = await client.get("/v1/generations/g1/events", headers={"Last-Event-ID": value})
    assert response.status == 404, await response.text()  # read as 7: no such job


@pytest.mark.parametrize("kind", ["9" * 5000, "-" + "9" * 5000, "99"])
async def test_a_knowledge_kind_of_many_digits_is_named(
    client: Client, project: str, kind: str
) -> None:
    response = await client.get(f"/v1/{project}/knowledge", params={"kind": kind})
    assert set(await _violations(response, "INVALID_QUERY_PARAMETER")) == {"kind"}


async def test_invalid_forwarded_header(client: Client) -> None:
    response = await client.get("/v1/projects", headers={"x-preferred-provider": "a\tb"})
    assert set(await _violations(response, "INVALID_HEADER")) == {"x-preferred-provider"}


async def _raw(client: Client, head: bytes) -> tuple[int, dict[str, Any]]:
    """Send `head` (a request line and headers, no body) as bytes; the answer's status and,
    when it is JSON, its body. aiohttp's client would encode what these tests send raw."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head + b"Host: test\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    is_json = b"application/json" in headers.lower()
    return int(status_line.split()[1]), json.loads(body) if is_json else {}


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/projects?pageToken=\xff\xfe",  # bytes that are not UTF-8: llhttp refuses them
        b"/v1/projects?colour\xff=red",
        b"/v1/projects?pageToken=%FF%FE",  # percent-encoded: decoded as U+FFFD
        b"/v1/projects?pageToken=%ED%A0%80",  # a surrogate's UTF-8 bytes, percent-encoded
    ],
)
async def test_query_bytes_that_are_not_text_are_a_400(client: Client, target: bytes) -> None:
    status, _ = await _raw(client, b"GET " + target + b" HTTP/1.1\r\n")
    assert status == 400


# (A control character in a header is refused by llhttp before any handler.)
@pytest.mark.parametrize("value", [b"Bearer \xff\xfe", "Bearer caf\u00e9".encode()])
async def test_an_authorization_header_that_is_not_printable_ascii_is_named(
    client: Client, value: bytes
) -> None:
    status, answer = await _raw(
        client, b"GET /v1/projects HTTP/1.1\r\nAuthorization: " + value + b"\r\n"
    )
    assert status == 400, answer
    violations = answer["error"]["details"][1]["fieldViolations"]
    assert {violation["field"] for violation in violations} == {"Authorization"}
