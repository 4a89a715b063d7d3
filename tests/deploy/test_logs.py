"""Structured logs: one JSON line per request at each hop and per job state change, each
with the request id (the gateway's, carried to the core) and the generation name."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from server import Core, logs
from tests.gateway.conftest import serve_gateway

REQUEST_ID = "req-logs-7"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Logs configured as the CLI does, into a buffer; the previous setup restored after."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    logs.configure("json", "INFO", stream)
    try:
        yield stream
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "scriptgen"]:
            root.removeHandler(handler)
        root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_requests_and_job_changes_log_one_json_line_each(
    core: Core, log_stream: io.StringIO
) -> None:
    async with serve_gateway(f"127.0.0.1:{core.grpc_port}") as http:
        headers = {"X-Request-Id": REQUEST_ID}
        project = (await http.post("/v1/projects", json={"title": "Logs"}, headers=headers)).json()
        async with http.stream(
            "POST",
            f"/v1/{project['name']}/generations",
            json={"title": "Pilot"},
            headers={**headers, "Accept": "text/event-stream"},
        ) as stream:
            body = "".join([line async for line in stream.aiter_lines()])
        assert "event: completed" in body
    lines = _lines(log_stream)
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)

    access = [line for line in lines if line["logger"] == "scriptgen.gateway.access"]
    assert {(line["http_method"], line["route"], line["status"]) for line in access} >= {
        ("POST", "/v1/projects", 201),
        ("POST", "/v1/projects/{project}/generations", 200),
    }
    assert all(line["request_id"] == REQUEST_ID for line in access)
    assert all(line["duration_seconds"] >= 0 for line in access)

    calls = {line["method"]: line for line in lines if line["logger"] == "scriptgen.core.calls"}
    assert calls["CreateProject"]["code"] == "OK"
    generate = calls["GenerateScript"]
    assert generate["request_id"] == REQUEST_ID and generate["code"] == "OK"
    generation = generate["generation"]
    assert generation.startswith("generations/")

    job = [line for line in lines if line["logger"].startswith("server.jobs")]
    assert len(job) >= 2, "a job logs at least its start and its end"
    assert all(line["generation"] == generation for line in job)
    assert all(line["request_id"] == REQUEST_ID for line in job)
    assert job[-1]["message"].endswith("succeeded")
    states = [line["message"].rsplit(" ", 1)[-1] for line in job if ": state " in line["message"]]
    assert states == ["RUNNING", "SUCCEEDED"], "every state change after QUEUED logs one line"


def test_exceptions_and_extra_fields_are_json() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("tests.deploy.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("%s: failed", "generations/gabc", extra={"stage": "write"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    (line,) = _lines(stream)
    assert line["generation"] == "generations/gabc"
    assert line["stage"] == "write"
    assert "ValueError: boom" in line["exception"]
    assert line["level"] == "ERROR"
