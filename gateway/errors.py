"""Every error the gateway answers: the one gRPC→HTTP status mapping and the JSON error body.

An `ApiError` is a gRPC status code, a message and `google.rpc` details — the
same shape whether the core raised it (decoded from `grpc-status-details-bin`)
or the gateway decided it (a bad body, query parameter, path id or header).
Errors the gateway raises itself carry a `google.rpc.ErrorInfo` whose `reason`
is one of `Reason`, in the domain `scriptgen.dev`.

A failed call whose status carries no ErrorInfo of that domain did not come
from the core's error tree: the channel could not reach a core, a proxy or
the gRPC library answered. Its text describes our network ("connections to
all backends failing; last error: … ipv4:10.0.3.7:50051 … Connection
refused"), so the client gets a generic message for its code (reason
`CORE_CALL_FAILED`) and the log gets the original, with the request id.
"""

from __future__ import annotations

import base64
import enum
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from gateway.state import CURRENT_REQUEST_ID

_log = logging.getLogger(__name__)

DOMAIN = "scriptgen.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: Trailing metadata of the core's rate limits, answered as X-RateLimit-* headers.
RATE_LIMIT_HEADERS: Mapping[str, str] = {
    "x-ratelimit-limit": "X-RateLimit-Limit",
    "x-ratelimit-remaining": "X-RateLimit-Remaining",
    "x-ratelimit-reset": "X-RateLimit-Reset",
}

# google.rpc.Code → HTTP, as documented in google/rpc/code.proto, plus nginx's
# 499 for CANCELLED, which is what the client did.
_HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_BY_NUMBER: Mapping[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

#: What a client is told of a failed call that did not come from the core's error tree.
_GENERIC_MESSAGES: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.CANCELLED: "The call was cancelled.",
    grpc.StatusCode.UNKNOWN: "The service failed unexpectedly.",
    grpc.StatusCode.INVALID_ARGUMENT: "The request is not valid.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The service did not answer in time; retry later.",
    grpc.StatusCode.NOT_FOUND: "Not found.",
    grpc.StatusCode.ALREADY_EXISTS: "Already exists.",
    grpc.StatusCode.PERMISSION_DENIED: "Permission denied.",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "A limit of the service was reached; retry later.",
    grpc.StatusCode.FAILED_PRECONDITION: "The request cannot be carried out now.",
    grpc.StatusCode.ABORTED: "The call was aborted; retry it.",
    grpc.StatusCode.OUT_OF_RANGE: "Out of range.",
    grpc.StatusCode.UNIMPLEMENTED: "Not implemented.",
    grpc.StatusCode.INTERNAL: "Internal error.",
    grpc.StatusCode.UNAVAILABLE: "The service is unavailable; retry later.",
    grpc.StatusCode.DATA_LOSS: "Internal error.",
    grpc.StatusCode.UNAUTHENTICATED: "Authentication is required.",
}

#: A client that is told to slow down without a RetryInfo waits this long.
DEFAULT_RETRY_AFTER_SECONDS = 1


class Reason(enum.StrEnum):
    """Stable `ErrorInfo.reason` values of errors the gateway decides itself."""

    #: The body is not JSON, not a JSON object, too large, or not what its
    #: Content-Encoding says.
    MALFORMED_BODY = "MALFORMED_BODY"
    #: A body field is unknown or has the wrong type.
    INVALID_FIELD = "INVALID_FIELD"
    #: The body is not `application/json`.
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    #: A query parameter is unknown, repeated or not of its type.
    INVALID_QUERY_PARAMETER = "INVALID_QUERY_PARAMETER"
    #: A resource id in the path is not a valid id.
    INVALID_RESOURCE_ID = "INVALID_RESOURCE_ID"
    #: A header (`Last-Event-ID`, `x-preferred-provider`, …) has an invalid value.
    INVALID_HEADER = "INVALID_HEADER"
    #: No route has this path.
    ROUTE_NOT_FOUND = "ROUTE_NOT_FOUND"
    #: The route exists but not with this method.
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    #: The core answered in a way the gateway could not translate.
    GATEWAY_INTERNAL = "GATEWAY_INTERNAL"
    #: This gateway process serves its maximum of event streams (429, Retry-After).
    OVER_CAPACITY = "OVER_CAPACITY"
    #: A call to the core failed outside the core's error tree (no core reachable, a
    #: transport error); the message is generic, the gateway's log has the original.
    CORE_CALL_FAILED = "CORE_CALL_FAILED"
    #: This gateway listens beyond loopback and its core answered a call without an API
    #: key (SCRIPTGEN_AUTH=disabled): every API call is refused (503; gateway.open_core).
    CORE_AUTH_DISABLED = "CORE_AUTH_DISABLED"
    #: This gateway listens beyond loopback and no core has yet said it requires keys (503).
    CORE_AUTH_UNVERIFIED = "CORE_AUTH_UNVERIFIED"
    #: The request is not valid HTTP: a URL or header line over the limit, too many
    #: headers, bytes that are not HTTP (gateway.http_errors).
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    #: A CORS preflight from an origin SCRIPTGEN_CORS_ORIGINS does not list (403).
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status answering a gRPC status code — the only such mapping."""
    return _HTTP_STATUS.get(code, 500)


def status_code(number: int) -> grpc.StatusCode:
    """The gRPC status code with this number; unknown numbers are UNKNOWN."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


class ApiError(Exception):
    """An error for an HTTP client: a gRPC status with its `google.rpc` details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: Sequence[any_pb2.Any] = (),
        *,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        # Only for HTTP-level outcomes with no gRPC counterpart, e.g. 405.
        self._http_status = http_status
        #: Headers from the core's metadata (X-RateLimit-*).
        self.extra_headers: dict[str, str] = {}

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> ApiError:
        return cls(status_code(status.code), status.message, status.details)

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError, request_id: str | None = None) -> ApiError:
        """Decode a failed call, keeping the rich details the core attached.

        A status without the core's ErrorInfo gets a generic message; its own text
        is logged (with `request_id`, by default the request being answered).
        """
        code = error.code()
        message = error.details() or code.name
        details: list[any_pb2.Any] = []
        headers: dict[str, str] = {}
        for key, value in error.trailing_metadata() or ():
            if key in RATE_LIMIT_HEADERS and isinstance(value, str) and value.isdigit():
                headers[RATE_LIMIT_HEADERS[key]] = value
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                decoded = status_pb2.Status()
                try:
                    decoded.ParseFromString(value)
                except Exception:  # a garbled trailer must not hide the error itself
                    continue
                if decoded.code == code.value[0]:
                    details.extend(decoded.details)
        if _from_error_tree(details):
            api_error = cls(code, message, details)
        else:
            _log.log(
                logging.DEBUG if code is grpc.StatusCode.CANCELLED else logging.WARNING,
                "a call to the core failed outside its error tree: %s: %s",
                code.name,
                message,
                extra={
                    "request_id": CURRENT_REQUEST_ID.get() if request_id is None else request_id
                },
            )
            api_error = cls.gateway(
                code, Reason.CORE_CALL_FAILED, _GENERIC_MESSAGES.get(code, "Internal error.")
            )
        api_error.extra_headers = headers
        return api_error

    @classmethod
    def invalid(
        cls, reason: Reason, message: str, violations: Mapping[str, str] | None = None
    ) -> ApiError:
        """An INVALID_ARGUMENT decided by the gateway, naming each bad field."""
        details = [_pack(error_details_pb2.ErrorInfo(reason=reason.value, domain=DOMAIN))]
        if violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=_shown(field), description=_shown(text)
                    )
                    for field, text in violations.items()
                ]
            )
            details.append(_pack(bad_request))
        return cls(grpc.StatusCode.INVALID_ARGUMENT, _shown(message), details)

    @classmethod
    def gateway(
        cls,
        code: grpc.StatusCode,
        reason: Reason,
        message: str,
        *,
        http_status: int | None = None,
    ) -> ApiError:
        """Any other error decided by the gateway itself."""
        info = error_details_pb2.ErrorInfo(reason=reason.value, domain=DOMAIN)
        return cls(code, message, [_pack(info)], http_status=http_status)

    @property
    def http_status(self) -> int:
        return self._http_status or http_status(self.code)

    @property
    def retry_after_seconds(self) -> int | None:
        """Seconds for `Retry-After`: from RetryInfo, else a default when rate-limited."""
        for detail in self.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
                return max(1, math.ceil(delay))
        if self.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            return DEFAULT_RETRY_AFTER_SECONDS
        return None

    def status(self) -> status_pb2.Status:
        """As a `google.rpc.Status`, e.g. for a `failed` event."""
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=self.details
        )

    def details_json(self) -> list[dict[str, Any]]:
        return [_detail_json(detail) for detail in self.details]

    def body(self) -> dict[str, Any]:
        """The Google-style JSON error body."""
        return {
            "error": {
                "code": self.http_status,
                "status": self.code.name,
                "message": self.message,
                "details": self.details_json(),
            }
        }

    def headers(self) -> dict[str, str]:
        headers = dict(self.extra_headers)
        retry_after = self.retry_after_seconds
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return headers


def _from_error_tree(details: Sequence[any_pb2.Any]) -> bool:
    """Whether `details` carry the ErrorInfo every error of the core's tree has."""
    info = error_details_pb2.ErrorInfo()
    return any(detail.Unpack(info) and info.domain == DOMAIN for detail in details)


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _detail_json(detail: any_pb2.Any) -> dict[str, Any]:
    try:
        return dict(json_format.MessageToDict(detail))
    except (TypeError, json_format.Error):
        # A detail type this process does not know still reaches the client, opaquely.
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


def _shown(text: str) -> str:
    """`text` as it can be sent: a lone UTF-16 surrogate in a key or value the error quotes
    (from a JSON `\\uD800` escape) is written as its escape, as no UTF-8 holds it. Any
    other text is returned as it is."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
