"""Undecodable requests are INVALID_ARGUMENT, not gRPC's UNKNOWN with parser internals.

gRPC parses a request before any servicer code runs, and answers a parse
failure with UNKNOWN naming the exception. This interceptor swaps each
method's deserializer for one that turns bytes that do not parse into an
`Undecodable` marker; `services.calls` then raises INVALID_ARGUMENT
(field `request`) for it, after the caller's key is checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio


class Undecodable:
    """A request whose bytes are not a valid message of its type."""


def _lenient(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if parse is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except (DecodeError, ValueError, RuntimeError):
            return Undecodable()

    return deserialize


class LenientDecoding(aio.ServerInterceptor):
    """Marks undecodable requests instead of failing them before the servicer runs."""

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
        parse = _lenient(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                handler.unary_unary, parse, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                handler.unary_stream, parse, handler.response_serializer
            )
        return handler
