"""Reads what a request carries — JSON body, query parameters, path ids, headers.

Each reader either returns a value of the right type or raises an `ApiError`
(INVALID_ARGUMENT → 400) whose `google.rpc.BadRequest` names what is wrong, so
no client input can reach the core malformed or turn into a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from aiohttp import hdrs, web

from gateway.errors import ApiError, Reason

# A single, URL-safe path segment; the core applies each resource's own rules.
_RESOURCE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}")
_HEADER_VALUE: Final = re.compile(r"[\x20-\x7e]{1,256}")
_INT32_MAX: Final = 2**31 - 1
_INT64_MAX: Final = 2**63 - 1
_READ_CHUNK: Final = 64 * 1024


def path_id(request: web.Request, name: str) -> str:
    """The resource id in path segment `{name}`."""
    value = request.match_info[name]
    if not _RESOURCE_ID.fullmatch(value):
        raise ApiError.invalid(
            Reason.INVALID_RESOURCE_ID,
            f"Invalid {name} id {value!r}.",
            {name: "Must be 1-128 characters of [A-Za-z0-9._~-], starting with a letter or digit."},
        )
    return value


async def json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise _too_large(max_bytes)
    raw = bytearray()
    while chunk := await request.content.read(_READ_CHUNK):
        raw += chunk
        if len(raw) > max_bytes:
            raise _too_large(max_bytes)
    if not raw.strip():
        return {}
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    # Requiring JSON also keeps cross-site form posts out: a browser cannot send
    # application/json to another origin without a CORS preflight.
    if content_type is not None and not _is_json(request.content_type):
        raise ApiError.invalid(
            Reason.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json, not {request.content_type!r}.",
            {"Content-Type": "Must be application/json."},
        )
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ApiError.invalid(
            Reason.MALFORMED_BODY,
            "The request body is not valid JSON.",
            {"body": _first_line(str(error))},
        ) from None
    if not isinstance(body, dict):
        raise ApiError.invalid(
            Reason.MALFORMED_BODY,
            "The request body must be a JSON object.",
            {"body": f"Must be a JSON object, not {type(body).__name__}."},
        )
    return body


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _too_large(max_bytes: int) -> ApiError:
    return ApiError.invalid(
        Reason.MALFORMED_BODY,
        f"Request payload size exceeds the limit: {max_bytes} bytes.",
        {"body": f"Must be at most {max_bytes} bytes."},
    )


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Query:
    """Typed query parameters, each accepted as camelCase or snake_case.

    Read every parameter the route knows, then call `finish()`: it raises one
    error listing every unknown, repeated or mistyped parameter.
    """

    def __init__(self, request: web.Request) -> None:
        self._query = request.query
        self._known: set[str] = set()
        self._violations: dict[str, str] = {}

    def _raw(self, name: str) -> str | None:
        spellings = tuple(dict.fromkeys((name, snake_case(name))))
        self._known.update(spellings)
        values = [value for spelling in spellings for value in self._query.getall(spelling, [])]
        if len(values) > 1:
            self._violations[name] = "Must be given at most once."
            return None
        return values[0] if values else None

    def text(self, name: str) -> str | None:
        return self._raw(name)

    def integer(self, name: str, *, maximum: int = _INT32_MAX) -> int | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            value = int(raw, 10)
        except ValueError:
            self._violations[name] = f"Must be an integer, not {raw!r}."
            return None
        if not -maximum - 1 <= value <= maximum:
            self._violations[name] = f"Must be between {-maximum - 1} and {maximum}."
            return None
        return value

    def boolean(self, name: str) -> bool | None:
        raw = self._raw(name)
        if raw is None:
            return None
        lowered = raw.lower()
        if lowered in {"true", "1"}:
            return True
        if lowered in {"false", "0"}:
            return False
        self._violations[name] = f"Must be true or false, not {raw!r}."
        return None

    def finish(self) -> None:
        for name in self._query:
            if name not in self._known:
                self._violations.setdefault(name, "Unknown query parameter.")
        if self._violations:
            raise ApiError.invalid(
                Reason.INVALID_QUERY_PARAMETER,
                "The request has invalid query parameters.",
                self._violations,
            )


def after_sequence(request: web.Request, query: Query) -> int:
    """Where an event stream resumes: `Last-Event-ID`, else `lastEventId`, else 0."""
    header = request.headers.get("Last-Event-ID")
    param = query.text("lastEventId")
    raw, field = (header, "Last-Event-ID") if header is not None else (param, "lastEventId")
    if raw is None or raw == "":
        # EventSource sends an empty Last-Event-ID when it never saw an id.
        return 0
    if raw.isascii() and raw.isdigit() and int(raw) <= _INT64_MAX:
        return int(raw)
    reason = Reason.INVALID_HEADER if field == "Last-Event-ID" else Reason.INVALID_QUERY_PARAMETER
    raise ApiError.invalid(
        reason,
        f"Invalid {field} {raw!r}.",
        {field: "Must be the non-negative integer id of an event."},
    )


def is_text(value: str) -> bool:
    """Whether `value` can be sent as UTF-8: it holds no lone surrogate (which a JSON
    `\\uD800` escape becomes)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def header_value(request: web.Request, name: str) -> str | None:
    """A header forwarded to the core as gRPC metadata, which allows printable ASCII only."""
    value = request.headers.get(name)
    if value is None:
        return None
    if not _HEADER_VALUE.fullmatch(value):
        raise ApiError.invalid(
            Reason.INVALID_HEADER,
            f"Invalid {name} header.",
            {name: "Must be 1-256 printable ASCII characters."},
        )
    return value
