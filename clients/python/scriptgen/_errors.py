"""The SDK's one error tree, with the core's rich `google.rpc.Status` details decoded.

    ScriptgenError                   anything the SDK raises on purpose
    ├── RPCError                     a call ended with a non-OK gRPC status
    │   ├── InvalidArgumentError     INVALID_ARGUMENT, OUT_OF_RANGE (see .field_violations)
    │   ├── NotFoundError            NOT_FOUND (see .resource)
    │   ├── AlreadyExistsError       ALREADY_EXISTS (e.g. a request_id reused for another request)
    │   ├── FailedPreconditionError  FAILED_PRECONDITION, ABORTED
    │   ├── UnauthenticatedError     UNAUTHENTICATED
    │   ├── PermissionDeniedError    PERMISSION_DENIED
    │   ├── ResourceExhaustedError   RESOURCE_EXHAUSTED (see .retry_delay)
    │   ├── DeadlineExceededError    DEADLINE_EXCEEDED
    │   ├── UnavailableError         UNAVAILABLE (after the retry policy gave up)
    │   ├── CallCancelledError       CANCELLED
    │   └── ServerError              INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS
    ├── StreamError                  an event stream broke its promises
    │   ├── SequenceGapError         an event arrived out of order; events were lost
    │   └── StreamInterruptedError   the link broke and resuming gave up
    └── ClientClosedError            a call on a `Client` after `close()`

A failed generation job is not an exception while streaming: it is the
job's terminal `failed` event. `RPCError.from_status` turns its
`google.rpc.Status` into the same typed error when the caller wants one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TypeVar

import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from google.rpc import error_details_pb2, status_pb2

#: Trailing metadata key that carries a serialized google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"

#: Domain of the core's ErrorInfo details.
ERROR_DOMAIN = "scriptgen.dev"

_DETAIL_TYPES: tuple[type[ProtoMessage], ...] = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.DebugInfo,
    error_details_pb2.QuotaFailure,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.RequestInfo,
    error_details_pb2.Help,
    error_details_pb2.LocalizedMessage,
)

_D = TypeVar("_D", bound=ProtoMessage)

_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The `grpc.StatusCode` of a google.rpc.Code number (UNKNOWN for strangers)."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def decode_details(details: Iterable[any_pb2.Any]) -> list[ProtoMessage]:
    """Unpack the Any-packed details of a google.rpc.Status.

    Known google.rpc detail types come back as their own messages; anything
    else, or a known type whose bytes do not parse, is kept as the `Any` so
    nothing the server said is dropped.
    """
    decoded: list[ProtoMessage] = []
    for packed in details:
        for detail_type in _DETAIL_TYPES:
            if packed.TypeName() == detail_type.DESCRIPTOR.full_name:
                detail = detail_type()
                try:
                    packed.Unpack(detail)
                except DecodeError:
                    decoded.append(packed)
                else:
                    decoded.append(detail)
                break
        else:
            decoded.append(packed)
    return decoded


class ScriptgenError(Exception):
    """Base of every error the SDK raises on purpose."""


class RPCError(ScriptgenError):
    """A call ended with a non-OK gRPC status.

    `status` is the google.rpc.Status the server attached, if any, and
    `details` its decoded detail messages.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details: list[ProtoMessage] = (
            decode_details(status.details) if status is not None else []
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.code, self.message, self.status))

    @staticmethod
    def from_status(status: status_pb2.Status) -> RPCError:
        """The typed error for a google.rpc.Status, e.g. a failed job's."""
        code = status_code(status.code)
        return _ERROR_TYPES.get(code, RPCError)(code, status.message, status)

    @staticmethod
    def from_call(error: grpc.aio.AioRpcError) -> RPCError:
        """The typed error for a failed call, decoding `grpc-status-details-bin`.

        Details that do not parse as a google.rpc.Status are ignored: the code
        and message of the call still say what happened.
        """
        code = error.code()
        message = error.details() or ""
        status: status_pb2.Status | None = None
        for key, value in error.trailing_metadata() or ():
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                try:
                    parsed = status_pb2.Status.FromString(value)
                except DecodeError:
                    break
                # The status proto wins only if it tells the same story as the call.
                if parsed.code == code.value[0]:
                    status = parsed
                break
        return _ERROR_TYPES.get(code, RPCError)(code, message, status)

    def _first(self, detail_type: type[_D]) -> _D | None:
        for detail in self.details:
            if isinstance(detail, detail_type):
                return detail
        return None

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        """The ErrorInfo detail, if the server sent one."""
        return self._first(error_details_pb2.ErrorInfo)

    @property
    def reason(self) -> str | None:
        """The stable machine-readable reason (ErrorInfo.reason), e.g. "PROJECT_NOT_FOUND"."""
        info = self.error_info
        return info.reason if info is not None else None

    @property
    def domain(self) -> str | None:
        """ErrorInfo.domain; "scriptgen.dev" for the core's own errors."""
        info = self.error_info
        return info.domain if info is not None else None

    @property
    def field_violations(self) -> Sequence[error_details_pb2.BadRequest.FieldViolation]:
        """Every BadRequest field violation, in the order the server sent them."""
        return [
            violation
            for detail in self.details
            if isinstance(detail, error_details_pb2.BadRequest)
            for violation in detail.field_violations
        ]

    @property
    def retry_delay(self) -> timedelta | None:
        """How long the server asks the caller to wait before trying again (RetryInfo)."""
        info = self._first(error_details_pb2.RetryInfo)
        if info is None or not info.HasField("retry_delay"):
            return None
        return info.retry_delay.ToTimedelta()

    @property
    def resource(self) -> error_details_pb2.ResourceInfo | None:
        """The resource the error is about (ResourceInfo), e.g. the missing project."""
        return self._first(error_details_pb2.ResourceInfo)

    def describe(self) -> str:
        """One line for people: code, message, reason and field violations."""
        parts = [f"{self.code.name}: {self.message}"]
        if self.reason:
            parts.append(f"[{self.reason}]")
        violations = "; ".join(
            f"{violation.field}: {violation.description}" for violation in self.field_violations
        )
        if violations:
            parts.append(f"({violations})")
        delay = self.retry_delay
        if delay is not None:
            parts.append(f"(retry in {delay.total_seconds():g}s)")
        return " ".join(parts)


class InvalidArgumentError(RPCError):
    """The request itself is wrong; `field_violations` says where."""


class NotFoundError(RPCError):
    """The named resource does not exist."""


class AlreadyExistsError(RPCError):
    """The resource exists, or a request_id was reused for a different request."""


class FailedPreconditionError(RPCError):
    """The system is not in a state for this call, e.g. deleting a project with episodes."""


class UnauthenticatedError(RPCError):
    """No valid credentials were sent."""


class PermissionDeniedError(RPCError):
    """The credentials do not allow this call."""


class ResourceExhaustedError(RPCError):
    """A limit was hit; `retry_delay` says when to come back."""


class DeadlineExceededError(RPCError):
    """The call's deadline passed before it finished."""


class UnavailableError(RPCError):
    """The core could not be reached, after retrying where that was safe."""


class CallCancelledError(RPCError):
    """The call was cancelled (by this client or the server) before it finished."""


class ServerError(RPCError):
    """The server failed in a way the caller cannot fix (INTERNAL, UNKNOWN, ...)."""


_ERROR_TYPES: dict[grpc.StatusCode, type[RPCError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
    grpc.StatusCode.INTERNAL: ServerError,
    grpc.StatusCode.UNKNOWN: ServerError,
    grpc.StatusCode.UNIMPLEMENTED: ServerError,
    grpc.StatusCode.DATA_LOSS: ServerError,
}


def _unpickled_stream_error(error_type: type[StreamError], args: tuple[object, ...]) -> StreamError:
    # BaseException.__new__ keeps `args` (the message); pickle then restores the
    # attributes (generation, last_sequence, ...) from the instance's __dict__.
    return error_type.__new__(error_type, *args)


class StreamError(ScriptgenError):
    """An event stream could not keep its promise of every event exactly once, in order."""

    def __init__(self, message: str, *, generation: str, last_sequence: int) -> None:
        super().__init__(message)
        #: The job, `generations/{generation}`, or "" if it was never learned.
        self.generation = generation
        #: Sequence of the last event handed to the caller (0 if none).
        self.last_sequence = last_sequence

    def __reduce__(self) -> tuple[object, ...]:
        # The keyword-only __init__ cannot take back `args`, as Exception's own reduce expects.
        return (_unpickled_stream_error, (type(self), self.args), self.__dict__)


class SequenceGapError(StreamError):
    """An event skipped ahead of the next expected sequence: events were lost."""

    def __init__(self, *, generation: str, last_sequence: int, received: int) -> None:
        super().__init__(
            f"{generation or 'job'}: expected event {last_sequence + 1}, received {received}",
            generation=generation,
            last_sequence=last_sequence,
        )
        #: The out-of-order sequence that arrived.
        self.received = received


class StreamInterruptedError(StreamError):
    """The link broke and every resume allowed by the retry policy failed.

    The link is not the job: a job started with `detach=True` keeps running;
    one that is not is cancelled by the core once nobody has followed it for
    its abandon time (`SCRIPTGEN_ABANDON_AFTER_SECONDS`, 30 s by default), so
    `follow(generation, last_sequence)` soon after picks it up again. The last
    failure is the `__cause__`: the call's typed `RPCError` when a call failed,
    a `TimeoutError` for a silent link, None for a stream that ended early.
    """


class ClientClosedError(ScriptgenError):
    """A call was made on a `Client` (or a stream of it) after the client was closed."""
