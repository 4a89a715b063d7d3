"""The one error tree of the core, and its translation to rich gRPC statuses.

Every error the service raises on purpose is a `ServiceError` subclass with a
gRPC code and a stable `reason` string (sent as `google.rpc.ErrorInfo.reason`
in domain `scriptgen.dev`). Clients may branch on the reason; the message is
for people.

| class              | code                | reasons                                              |
|--------------------|---------------------|------------------------------------------------------|
| InvalidArgument    | INVALID_ARGUMENT    | FIELD_INVALID (with google.rpc.BadRequest violations)|
| NotFound           | NOT_FOUND           | PROJECT_NOT_FOUND, EPISODE_NOT_FOUND,                |
|                    |                     | GENERATION_NOT_FOUND, KNOWLEDGE_NOT_FOUND            |
|                    |                     | (with google.rpc.ResourceInfo)                       |
| AlreadyExists      | ALREADY_EXISTS      | PROJECT_EXISTS, REQUEST_ID_REUSED, KNOWLEDGE_EXISTS  |
| FailedPrecondition | FAILED_PRECONDITION | PROJECT_HAS_EPISODES, PROJECT_ARCHIVED (no new      |
|                    |                     | episodes), SCRIPT_REJECTED (review: a job's script  |
|                    |                     | is not Fountain enough to save; nothing is saved),  |
|                    |                     | EXPORT_FONT_MISSING (no Hangul font for a PDF),      |
|                    |                     | KNOWLEDGE_LIMIT_REACHED (documents per project),     |
|                    |                     | CONTENT_REFUSED (every model provider refused a      |
|                    |                     | job's text), REQUEST_REFUSED (no provider could take |
|                    |                     | it as it stands: refused, a bad request, nothing     |
|                    |                     | written within the output cap) — a job ends `failed` |
|                    |                     | with these two; a retry would fail alike             |
| OutOfRange         | OUT_OF_RANGE        | SEQUENCE_AHEAD                                       |
| Unauthenticated    | UNAUTHENTICATED     | API_KEY_MISSING, API_KEY_INVALID (unknown, revoked,  |
|                    |                     | malformed), JOB_TOKEN_INVALID (bad or expired)       |
| PermissionDenied   | PERMISSION_DENIED   | INSUFFICIENT_SCOPE, JOB_TOKEN_SCOPE (a job token     |
|                    |                     | used for anything but following its own job)         |
| ResourceExhausted  | RESOURCE_EXHAUSTED  | TOO_MANY_JOBS, RATE_LIMITED (per key),               |
|                    |                     | TOO_MANY_STREAMS (per tenant), OVER_CAPACITY (this   |
|                    |                     | process's --max-streams),                            |
|                    |                     | TOKEN_BUDGET_EXHAUSTED (daily, per tenant; a job     |
|                    |                     | ends `failed` with it) — all with RetryInfo          |
| Unavailable        | UNAVAILABLE         | SHUTTING_DOWN, STORE_UNAVAILABLE,                    |
|                    |                     | PROVIDERS_UNAVAILABLE, REDIS_UNAVAILABLE,            |
|                    |                     | JOB_OWNER_LOST, KNOWLEDGE_UNAVAILABLE (Chroma or the |
|                    |                     | embedding service; with RetryInfo)                   |
| DataLoss           | DATA_LOSS           | EVENT_LOG_LOST (Redis lost a running job's events)   |
| DeadlineExceeded   | DEADLINE_EXCEEDED   | DEADLINE_EXCEEDED (the caller's deadline, in a job)  |
| Internal           | INTERNAL            | INTERNAL (a bug; the log has the traceback)          |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "scriptgen.dev"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. `project.title`) and what is wrong."""

    field: str
    description: str


class ServiceError(Exception):
    """Base of every error the core raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"
    #: Extra trailing metadata the call ends with (e.g. x-ratelimit-* of a refused call).
    trailers: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[Message]:
        """Extra google.rpc detail messages beyond ErrorInfo."""
        return []

    def to_status(self) -> status_pb2.Status:
        """The google.rpc.Status sent in `grpc-status-details-bin`."""
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
        )
        packed = []
        for detail in [info, *self.details()]:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


class InvalidArgument(ServiceError):
    """The request breaks a documented limit or format."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "FIELD_INVALID"

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {summary}")

    def details(self) -> list[Message]:
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
        ]


def invalid(field: str, description: str) -> InvalidArgument:
    """Shorthand for a single-field InvalidArgument."""
    return InvalidArgument([FieldViolation(field, description)])


class NotFound(ServiceError):
    """The named resource does not exist (or is not visible to the caller)."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"

    def __init__(self, resource_type: str, name: str, reason: str) -> None:
        super().__init__(f"{resource_type} {name!r} not found", reason=reason)
        self.resource_type = resource_type
        self.name = name

    def details(self) -> list[Message]:
        return [
            error_details_pb2.ResourceInfo(
                resource_type=self.resource_type, resource_name=self.name
            )
        ]


class AlreadyExists(ServiceError):
    """A resource or idempotency key with that identity already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """The system is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class OutOfRange(ServiceError):
    """A position past what exists, e.g. an event sequence the job has not reached."""

    code = grpc.StatusCode.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class _Retryable(ServiceError):
    retry_after_seconds: float = 1.0

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float = 1.0
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_seconds = retry_after

    def details(self) -> list[Message]:
        seconds = int(self.retry_after_seconds)
        nanos = int((self.retry_after_seconds - seconds) * 1e9)
        return [
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
            )
        ]


class Unauthenticated(ServiceError):
    """No credentials, or credentials that are not valid (unknown, revoked, expired)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "API_KEY_INVALID"


class PermissionDenied(ServiceError):
    """Valid credentials that do not allow this call."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "INSUFFICIENT_SCOPE"


class ResourceExhausted(_Retryable):
    """A limit on concurrent work was reached; retry after the given delay."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(_Retryable):
    """The core cannot serve this now (shutting down, a store is down); retry."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before the work was done."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class DataLoss(ServiceError):
    """Stored state vanished, e.g. Redis restarted without persistence under a running job."""

    code = grpc.StatusCode.DATA_LOSS
    default_reason = "DATA_LOSS"


class Internal(ServiceError):
    """An unexpected failure: a bug. The message never carries internals."""

    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"
