"""Stream responses sent as the event log's bytes, without a message per event per reader.

The event log holds every event serialized once (server.events.base). Both
event streams answer `{GenerationEvent event = 1;}` messages, so a reader's
response is those bytes behind a field header (`encoded_response`): no message
is built, copied or serialized per event and reader. `EncodedResponses` lets
the response serializer of Scriptgen's server-streaming methods pass such bytes
through unchanged (and still serialize messages).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from grpc import aio

from server.services.decoding import OWN_SERVICES

#: The tag of field 1, length-delimited: `event` in both stream response messages.
_EVENT_TAG: Final = b"\x0a"


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encoded_response(event: bytes) -> bytes:
    """A GenerateScriptResponse / StreamGenerationEventsResponse around a serialized event."""
    return _EVENT_TAG + varint(len(event)) + event


def _passing_bytes(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    if serialize is None:
        return None

    def encode(response: Any) -> bytes:
        return response if response.__class__ is bytes else serialize(response)

    return encode


class EncodedResponses(aio.ServerInterceptor):
    """Streaming methods of Scriptgen's services may send pre-encoded responses."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or not str(handler_call_details.method).startswith(OWN_SERVICES):
            return handler
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                handler.unary_stream,
                handler.request_deserializer,
                _passing_bytes(handler.response_serializer),
            )
        if handler.stream_stream is not None:
            # RelayService writes its responses as bytes (server.services.relay).
            return grpc.stream_stream_rpc_method_handler(
                handler.stream_stream,
                handler.request_deserializer,
                _passing_bytes(handler.response_serializer),
            )
        return handler
