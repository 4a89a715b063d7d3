"""Undecodable and oversized requests are INVALID_ARGUMENT, not UNKNOWN or RESOURCE_EXHAUSTED.

gRPC parses a request before any servicer code runs, and answers a parse
failure with UNKNOWN naming the exception (a deserializer that raises gives
INTERNAL), and a message over the transport's receive limit with
RESOURCE_EXHAUSTED. This interceptor swaps each unary-request method's
deserializer for one that turns bytes that do not parse into an `Undecodable`
marker and, for Scriptgen's own services, bytes over the documented message
limit into an `Oversized` marker without parsing them; `services.calls` then
raises INVALID_ARGUMENT (field `request`) for either, after the caller's key
is checked. The transport limit is set well above the documented one
(`server.limits.transport_message_max`) so that oversized messages reach us.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from server import limits

#: Methods of these services get the documented message limit (health and reflection do not).
OWN_SERVICES: Final = "/scriptgen.v1."


class Undecodable:
    """A request whose bytes are not a valid message of its type."""


class Oversized(Undecodable):
    """A request over the documented message limit, left unparsed."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit

    def problem(self) -> str:
        """The field violation's description."""
        return (
            f"is {self.size} bytes, over the {limits.mebibytes(self.limit)} limit of a"
            " gRPC request message"
        )


def _lenient(
    parse: Callable[[bytes], Any] | None, max_bytes: int | None
) -> Callable[[bytes], Any] | None:
    if parse is None:
        return None

    def deserialize(raw: bytes) -> Any:
        if max_bytes is not None and len(raw) > max_bytes:
            return Oversized(len(raw), max_bytes)
        try:
            return parse(raw)
        except (DecodeError, ValueError, RuntimeError):
            return Undecodable()

    return deserialize


class LenientDecoding(aio.ServerInterceptor):
    """Marks undecodable and oversized requests instead of failing them before the servicer runs.

    `max_message_bytes` is the documented limit of a request message of
    Scriptgen's services (None: only the transport's).
    """

    def __init__(self, max_message_bytes: int | None = None) -> None:
        self.max_message_bytes = max_message_bytes

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        own = str(handler_call_details.method).startswith(OWN_SERVICES)
        parse = _lenient(handler.request_deserializer, self.max_message_bytes if own else None)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                handler.unary_unary, parse, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                handler.unary_stream, parse, handler.response_serializer
            )
        return handler
