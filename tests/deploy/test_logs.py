"""Structured logs: one JSON line per request at each hop and two per job (its start and its
end), each with the request id (the gateway's, carried to the core) and the generation name;
the SDKs' HTTP client writes its per-request lines only at debug level."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest

from server import Core, logs
from tests.gateway.conftest import serve_gateway

REQUEST_ID = "req-logs-7"


@contextlib.contextmanager
def _configured(level: str) -> Iterator[io.StringIO]:
    """Logs configured as the CLI does at `level`, into a buffer; every level `configure`
    sets (the root's, the libraries') and its handler put back after."""
    root = logging.getLogger()
    names = ("", "aiohttp.access", *logs.QUIET_LIBRARY_LOGGERS)
    levels = {name: logging.getLogger(name).level for name in names}
    stream = io.StringIO()
    logs.configure("json", level, stream)
    try:
        yield stream
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "scriptgen"]:
            root.removeHandler(handler)
        for name, previous in levels.items():
            logging.getLogger(name).setLevel(previous)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Logs configured as the CLI does, into a buffer; the previous setup restored after."""
    with _configured("INFO") as stream:
        yield stream


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
    assert all(line["generation"] == generation for line in job)
    assert all(line["request_id"] == REQUEST_ID for line in job)
    messages = [line["message"].removeprefix(f"{generation}: ") for line in job]
    # The synthetic writer's notice (once per process) may come first.
    assert messages[-2:] == [f"started for {project['name']}", "succeeded"], messages
    assert len(messages) <= 3


@pytest.mark.parametrize(
    ("level", "written", "warnings"),
    [("INFO", False, True), ("DEBUG", True, True), ("ERROR", False, False)],
)
def test_the_sdk_http_clients_request_lines_only_at_debug(
    level: str, written: bool, warnings: bool
) -> None:
    with _configured(level) as stream:
        # What httpx2 writes for every model request the openai and anthropic SDKs send.
        logging.getLogger("httpx2").info('HTTP Request: POST http://model/v1 "HTTP/1.1 200 OK"')
        logging.getLogger("httpx2").warning("a warning")
        logging.getLogger("server.jobs.runner").info("a job line")
    messages = [line["message"] for line in _lines(stream)]
    assert ('HTTP Request: POST http://model/v1 "HTTP/1.1 200 OK"' in messages) is written
    assert ("a warning" in messages) is warnings  # never below the level asked for
    assert ("a job line" in messages) is (level != "ERROR")


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


def test_lines_follow_sys_stderr_even_after_the_one_before_was_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A test runner swaps sys.stderr and closes its capture: the next line goes to the new
    one instead of failing on the closed one (three tests errored so, on a shared worker)."""
    root = logging.getLogger()
    level = root.level
    # A text wrapper, as pytest's capture is: flushing it once closed raises.
    first, second = io.TextIOWrapper(io.BytesIO()), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logs.configure("json", "INFO")
    try:
        logging.getLogger("scriptgen.test").info("to the first")
        first.close()
        monkeypatch.setattr("sys.stderr", second)
        logging.getLogger("scriptgen.test").info("to the second")
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "scriptgen"]:
            root.removeHandler(handler)
        root.setLevel(level)
    assert json.loads(second.getvalue())["message"] == "to the second"


def test_times_and_values_are_written_as_json_dumps_wrote_them() -> None:
    """The formatter's cached second and orjson change nothing in a line's values: the time
    is `isoformat(timespec="milliseconds")` in UTC across second boundaries, and values orjson
    would write otherwise are written as `json.dumps(default=str)` wrote them. A dataclass and
    an Enum by `str()`, not by the fields a repr hides or a value the redacting filter never
    saw; a float or tuple subclass, a datetime, NaN, an integer beyond 64 bits as before."""

    @dataclasses.dataclass
    class Settings:
        url: str
        key: str = dataclasses.field(default="sk-hidden", repr=False)

    class Backend(enum.Enum):
        CACHE = "redis://:hunter2@cache:6379/0"

    class Point(NamedTuple):
        x: int
        y: int

    class Ratio(float):
        pass

    for value in (Backend.CACHE, Point(1, 2), Ratio(0.25), math.nan, -math.inf, 2**70):
        record = logging.LogRecord("t", logging.INFO, "", 0, "m", None, None)
        record.__dict__.update(value=value, plain="x")
        written = logs.JsonFormatter().format(record)
        assert json.loads(written)["value"] == json.loads(json.dumps(value, default=str)) or (
            value != value and "NaN" in written
        ), value
    assert "hunter2" not in logs.redact(str(Backend.CACHE))  # what the filter checks: clean

    formatter = logs.JsonFormatter()
    moments = (0.0, 1.0, 59.9995, 1_765_090_000.0004, 1_765_090_000.9999, 1_765_090_001.5)
    for created in (*moments, *reversed(moments)):
        record = logging.LogRecord("t", logging.INFO, "", 0, "m", None, None)
        record.created = created
        line = json.loads(formatter.format(record))
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert line["time"] == expected, created
    record = logging.LogRecord("t", logging.INFO, "", 0, "m", None, None)
    when = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    record.__dict__.update(settings=Settings("redis://x"), when=when, ok="é")
    line = json.loads(formatter.format(record))
    assert line["settings"] == str(Settings("redis://x")) and "sk-hidden" not in line["settings"]
    assert line["when"] == str(when) and line["ok"] == "é"
