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
_HEADER_VALUE_MAX: Final = 256
_HEADER_VALUE: Final = re.compile(rf"[\x20-\x7e]{{1,{_HEADER_VALUE_MAX}}}")
#: A base-10 integer as clients write it: ASCII digits, an optional minus.
_INTEGER: Final = re.compile(r"(-?)([0-9]+)")
#: The most significant digits an integer we take may have: int64's 19.
_INTEGER_DIGITS_MAX: Final = 19
_INT32_MAX: Final = 2**31 - 1
_INT64_MAX: Final = 2**63 - 1
_READ_CHUNK: Final = 64 * 1024
#: The core keeps this much of a request id in its logs (server/logs.py, bind_request).
REQUEST_ID_MAX: Final = 128
REQUEST_ID_HEADER: Final = "X-Request-Id"
LAST_EVENT_ID_HEADER: Final = "Last-Event-ID"
#: Headers whose value is a comma-separated list: repeated field lines are one list,
#: joined with commas as RFC 9110 §5.3 allows.
LIST_HEADERS: Final = frozenset({"x-disabled-providers", "x-feature-flags"})
#: Headers that hold one value: a repeat with another value is refused, never settled by
#: taking the first (a proxy may have read the other). Idempotency-Key is read by its
#: route, Authorization by gateway.security; the middleware checks them all up front.
SINGLE_VALUED_HEADERS: Final = (
    "Authorization",
    "Idempotency-Key",
    LAST_EVENT_ID_HEADER,
    "X-Preferred-Provider",
    REQUEST_ID_HEADER,
)


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
    try:
        while chunk := await request.content.read(_READ_CHUNK):
            raw += chunk
            if len(raw) > max_bytes:
                raise _too_large(max_bytes)
    except web.RequestPayloadError:
        # Bytes that do not decode as their Content-Encoding (gzip, deflate) says, or a
        # chunked body that breaks off.
        _abandon_body(request)
        encoding = request.headers.get(hdrs.CONTENT_ENCODING)
        raise ApiError.invalid(
            Reason.MALFORMED_BODY,
            "The request body could not be read.",
            {
                "body": f"Is not valid {encoding} data, as its Content-Encoding says."
                if encoding
                else "Broke off before its end."
            },
        ) from None
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


def _abandon_body(request: web.Request) -> None:
    """Read no more of a body that cannot be read, and close the connection after the answer.

    Past such an error the connection's bytes are out of step, and aiohttp would read on
    to keep it open ("lingering"), meet the same error again outside any handler and log
    it at ERROR with a traceback (aio-libs/aiohttp#1710). Ending the body and closing, as
    aiohttp does itself with a body left unread, spares both.
    """
    request.content.feed_eof()
    request.protocol.close()


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


def parse_integer(raw: str) -> int | None:
    """`raw` as a base-10 integer (ASCII digits, an optional minus), None if it is not one.

    One with more significant digits than an int64 comes back as ±10**19, outside every
    range a caller takes: int() itself refuses text of over 4300 digits (ValueError), and
    such text can come in a URL or a header.
    """
    match = _INTEGER.fullmatch(raw)
    if match is None:
        return None
    sign, digits = match.group(1), match.group(2).lstrip("0")
    value = 10**_INTEGER_DIGITS_MAX if len(digits) > _INTEGER_DIGITS_MAX else int(digits or "0")
    return -value if sign else value


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
        value = parse_integer(raw)
        if value is None:
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
    header = single_header(request, LAST_EVENT_ID_HEADER)
    param = query.text("lastEventId")
    raw, field = (header, LAST_EVENT_ID_HEADER) if header is not None else (param, "lastEventId")
    if raw is None or raw == "":
        # EventSource sends an empty Last-Event-ID when it never saw an id.
        return 0
    value = parse_integer(raw)
    if value is not None and not raw.startswith("-") and value <= _INT64_MAX:
        return value
    reason = (
        Reason.INVALID_HEADER if field == LAST_EVENT_ID_HEADER else Reason.INVALID_QUERY_PARAMETER
    )
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


def single_header(request: web.Request, name: str) -> str | None:
    """The value of header `name`, which holds one value; None when absent.

    Sent more than once with the same value, it is that value; with different values it is
    an ApiError (400) naming the header.
    """
    values = request.headers.getall(name, ())
    if not values:
        return None
    if any(value != values[0] for value in values[1:]):
        raise ApiError.invalid(
            Reason.INVALID_HEADER,
            f"The {name} header is repeated with different values.",
            {name: "Must be sent once (or repeated with the same value)."},
        )
    return values[0]


def check_single_valued_headers(request: web.Request) -> None:
    """ApiError (400) for a header of SINGLE_VALUED_HEADERS repeated with different values."""
    for name in SINGLE_VALUED_HEADERS:
        single_header(request, name)


def header_value(request: web.Request, name: str) -> str | None:
    """A header forwarded to the core as gRPC metadata, which allows printable ASCII only.

    A list header (LIST_HEADERS) sent more than once is its values joined with commas, so no
    value is left out; any other header must not repeat with different values.
    """
    if name.lower() in LIST_HEADERS:
        values = request.headers.getall(name, ())
    else:
        single = single_header(request, name)
        values = [] if single is None else [single]
    if not values:
        return None
    value = ",".join(values)
    if not all(_HEADER_VALUE.fullmatch(part) for part in (*values, value)):
        raise ApiError.invalid(
            Reason.INVALID_HEADER,
            f"Invalid {name} header.",
            {
                name: f"Must be 1-{_HEADER_VALUE_MAX} printable ASCII characters"
                " (all its lines joined with commas, when repeated)."
            },
        )
    return value


def client_request_id(request: web.Request) -> str | None:
    """The client's X-Request-Id, None when absent or unusable (empty, not printable ASCII):
    the caller makes a new one. Longer than REQUEST_ID_MAX, or repeated with different
    values, it is an ApiError (400): replacing it would lose the id the client will look for.
    """
    value = single_header(request, REQUEST_ID_HEADER)
    if value is None:
        return None
    if len(value) > REQUEST_ID_MAX:
        raise ApiError.invalid(
            Reason.INVALID_HEADER,
            f"The {REQUEST_ID_HEADER} header is longer than {REQUEST_ID_MAX} characters.",
            {REQUEST_ID_HEADER: f"Must be at most {REQUEST_ID_MAX} characters."},
        )
    return value if _HEADER_VALUE.fullmatch(value) else None
