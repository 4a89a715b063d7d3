"""Turns service errors into rich gRPC statuses and counts every call by method and code.

Servicer methods are wrapped by `unary` or `streaming`: a `ServiceError` ends
the call with its code, message and `google.rpc.Status` details; anything
else is a bug, logged with its traceback and answered INTERNAL without
internals.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from grpc import aio

from server import logs
from server.errors import Internal, ServiceError
from server.metrics import CoreMetrics

log = logging.getLogger(__name__)
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

UnaryMethod = Callable[[Any, RequestT, aio.ServicerContext[Any, Any]], Awaitable[ResponseT]]
StreamMethod = Callable[[Any, RequestT, aio.ServicerContext[Any, Any]], AsyncIterator[ResponseT]]


class HasMetrics:
    """Servicers that count their calls."""

    metrics: CoreMetrics


async def abort(context: aio.ServicerContext[Any, Any], error: ServiceError) -> NoReturn:
    """End the call with the error's rich status."""
    status = error.to_status()
    await context.abort(
        error.code,
        error.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


def _as_service_error(method: str, exception: Exception) -> ServiceError:
    if isinstance(exception, ServiceError):
        return exception
    log.exception("%s failed unexpectedly", method)
    return Internal("internal error; the server log has the details")


def unary(
    name: str,
) -> Callable[[UnaryMethod[RequestT, ResponseT]], UnaryMethod[RequestT, ResponseT]]:
    """Wrap a unary servicer method named `name` in the service."""

    def wrap(method: UnaryMethod[RequestT, ResponseT]) -> UnaryMethod[RequestT, ResponseT]:
        @functools.wraps(method)
        async def call(
            self: HasMetrics, request: RequestT, context: aio.ServicerContext[Any, Any]
        ) -> ResponseT:
            code = grpc.StatusCode.OK
            started = time.monotonic()
            logs.bind_request(context.invocation_metadata())
            try:
                return await method(self, request, context)
            except Exception as exception:
                error = _as_service_error(name, exception)
                code = error.code
                await abort(context, error)
            finally:
                self.metrics.grpc_requests.labels(name, code.name).inc()
                logs.log_call(name, code.name, started, logs.generation_of(request))

        return call

    return wrap


def streaming(
    name: str,
) -> Callable[[StreamMethod[RequestT, ResponseT]], StreamMethod[RequestT, ResponseT]]:
    """Wrap a server-streaming servicer method named `name` in the service."""

    def wrap(method: StreamMethod[RequestT, ResponseT]) -> StreamMethod[RequestT, ResponseT]:
        @functools.wraps(method)
        async def call(
            self: HasMetrics, request: RequestT, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[ResponseT]:
            code = grpc.StatusCode.OK
            started = time.monotonic()
            logs.bind_request(context.invocation_metadata())
            generation = logs.generation_of(request)
            self.metrics.streams_active.inc()
            try:
                async for response in method(self, request, context):
                    generation = generation or logs.generation_of(response)
                    yield response
            except (GeneratorExit, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exception:
                error = _as_service_error(name, exception)
                code = error.code
                await abort(context, error)
            finally:
                self.metrics.streams_active.dec()
                self.metrics.grpc_requests.labels(name, code.name).inc()
                logs.log_call(name, code.name, started, generation)

        return call

    return wrap
