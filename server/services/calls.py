"""Turns service errors into rich gRPC statuses and counts every call by method and code.

Servicer methods are wrapped by `unary` or `streaming`: a `ServiceError` ends
the call with its code, message and `google.rpc.Status` details; anything
else is a bug, logged with its traceback and answered INTERNAL without
internals.

Before the method runs, the servicer's `Guard` (server.auth.guard) names the
caller — UNAUTHENTICATED or PERMISSION_DENIED otherwise — and takes the call
from the key's rate limit (RESOURCE_EXHAUSTED RATE_LIMITED); event streams
also count against the tenant's open streams. The caller is the call's
`CALLER` context variable.

Every call the rate limit counted reports the key's window in `x-ratelimit-*`
metadata (limit, remaining, seconds to reset), whatever its outcome: unary
answers and failed calls as trailing metadata; streams as initial metadata —
StreamGenerationEvents at once, GenerateScript with its first event, beside
`x-job-token`, a token that lets a browser follow that one job (a stream that
fails before its first event has them in its trailing metadata). GetGeneration
called with an API key sends a fresh `x-job-token` in its trailing metadata, so
a page whose token expired during a long disconnect can follow the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from grpc import aio
from prometheus_client import Histogram
from scriptgen.v1.generation_service_pb2 import GenerateScriptResponse

from server import logs
from server.auth.guard import CALLER, STREAM_LEASE_SECONDS, Caller, Guard
from server.auth.records import DEFAULT_TENANT
from server.errors import Internal, ServiceError, invalid
from server.metrics import CoreMetrics
from server.services.decoding import Oversized, Undecodable

log = logging.getLogger(__name__)
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

UnaryMethod = Callable[[Any, RequestT, aio.ServicerContext[Any, Any]], Awaitable[ResponseT]]
StreamMethod = Callable[[Any, RequestT, aio.ServicerContext[Any, Any]], AsyncIterator[ResponseT]]


#: Initial metadata of GenerateScript naming a token for following the new job.
JOB_TOKEN_KEY = "x-job-token"
_ANONYMOUS = Caller(DEFAULT_TENANT)


class HasMetrics:
    """Servicers that count their calls (and, with a guard, check who makes them)."""

    metrics: CoreMetrics
    guard: Guard | None = None


async def _admit(
    servicer: HasMetrics, name: str, request: object, context: aio.ServicerContext[Any, Any]
) -> tuple[Caller, tuple[tuple[str, str], ...]]:
    """Authenticate and rate-limit the call; the caller and its x-ratelimit-* metadata."""
    guard = servicer.guard
    if guard is None:
        CALLER.set(_ANONYMOUS)
        caller: Caller = _ANONYMOUS
        decision = None
    else:
        caller = await guard.authenticate(name, context.invocation_metadata(), request)
        CALLER.set(caller)
        decision = await guard.admit(caller)
    if isinstance(request, Oversized):
        raise invalid("request", request.problem())
    if isinstance(request, Undecodable):
        raise invalid("request", f"is not a valid {name}Request message")
    return caller, (() if decision is None else decision.headers())


async def abort(
    context: aio.ServicerContext[Any, Any],
    error: ServiceError,
    rate_limit: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """End the call with the error's rich status (and the caller's rate-limit state)."""
    status = error.to_status()
    # A rate-limit refusal carries its own x-ratelimit-* state.
    trailers = error.trailers or rate_limit
    await context.abort(
        error.code,
        error.message,
        trailing_metadata=(
            ("grpc-status-details-bin", status.SerializeToString()),
            *trailers,
        ),
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
            trailers: tuple[tuple[str, str], ...] = ()
            try:
                caller, trailers = await _admit(self, name, request, context)
                response = await method(self, request, context)
                if name == "GetGeneration":
                    trailers = _with_fresh_job_token(self.guard, caller, request, trailers)
                if trailers:
                    context.set_trailing_metadata(trailers)
                return response
            except Exception as exception:
                error = _as_service_error(name, exception)
                code = error.code
                await abort(context, error, trailers)
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
            stream: str | None = None
            renewing: asyncio.Task[None] | None = None
            caller = _ANONYMOUS
            initial: tuple[tuple[str, str], ...] = ()
            try:
                caller, initial = await _admit(self, name, request, context)
                if self.guard is not None:
                    stream = await self.guard.open_stream(caller)
                if stream is not None and self.guard is not None:
                    renewing = asyncio.create_task(
                        _keep_counted(self.guard, caller, stream), name="stream lease"
                    )
                first = True
                # From the call's start, so a slow job start shows (the documented meaning).
                first_event: Histogram | None = self.metrics.time_to_first_event.labels(name)
                if name != "GenerateScript" and initial:
                    # Nothing to wait for (no job token): the gateway's SSE answer
                    # carries them even when the first event is slow to come.
                    await context.send_initial_metadata(initial)
                    first = False
                async for response in method(self, request, context):
                    if first_event is not None:
                        first_event.observe(time.monotonic() - started)
                        first_event = None
                    generation = generation or _generation_of(response)
                    if first:
                        first = False
                        await _send_initial(self.guard, name, caller, generation, initial, context)
                    yield response
            except (GeneratorExit, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exception:
                error = _as_service_error(name, exception)
                code = error.code
                await abort(context, error, initial)
            finally:
                if renewing is not None:
                    renewing.cancel()
                if stream is not None and self.guard is not None:
                    with contextlib.suppress(ServiceError):
                        await self.guard.close_stream(caller, stream)
                self.metrics.streams_active.dec()
                self.metrics.grpc_requests.labels(name, code.name).inc()
                logs.log_call(name, code.name, started, generation)

        return call

    return wrap


def _generation_of(response: object) -> str:
    """The job a stream response is about; bytes are an encoded event (services.encoding)."""
    if isinstance(response, bytes):
        response = GenerateScriptResponse.FromString(response)
    return logs.generation_of(response)


def _with_fresh_job_token(
    guard: Guard | None, caller: Caller, request: object, trailers: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """GetGeneration by an API key: a new job token, for a browser whose token expired.

    Only a key can renew: a job token asking for its own job gets none, so a token
    still ends when its lifetime does.
    """
    generation = logs.generation_of(request)
    if guard is None or not caller.key_id or not generation:
        return trailers
    token = guard.job_token(generation, caller)
    return trailers if token is None else (*trailers, (JOB_TOKEN_KEY, token))


#: How often an open stream renews its lease on the tenant's stream count.
_RENEW_EVERY = STREAM_LEASE_SECONDS / 3


#: Seconds between two warnings of failed stream-slot renewals (of any stream).
SLOT_WARNING_EVERY = 60.0
_last_slot_warning = [float("-inf")]


async def _keep_counted(guard: Guard, caller: Caller, stream: str) -> None:
    """Renew an open stream's lease on its tenant's stream count until it is cancelled.

    On a timer, not as events are sent: a stream with nothing to send for longer than the
    lease (a quiet job, a client that stopped reading) is still open and still counts.
    """
    task = asyncio.current_task()
    while task is None or not task.cancelling():  # a cancellation a Redis call swallowed
        await asyncio.sleep(_RENEW_EVERY)
        try:
            await guard.renew_stream(caller, stream)
        except Exception as error:
            # Redis away, or READONLY from a replica mid-failover: the next renewal may land,
            # and one missed leaves the lease two more tries. The stream itself goes on. An
            # outage fails every open stream's renewal: one warning a minute says it.
            now = time.monotonic()
            if now - _last_slot_warning[0] >= SLOT_WARNING_EVERY:
                _last_slot_warning[0] = now
                message = error.message if isinstance(error, ServiceError) else repr(error)
                log.warning("stream slot of tenant %r not renewed: %s", caller.tenant, message)


async def _send_initial(
    guard: Guard | None,
    name: str,
    caller: Caller,
    generation: str,
    initial: tuple[tuple[str, str], ...],
    context: aio.ServicerContext[Any, Any],
) -> None:
    """Before a stream's first message: its rate-limit state and, for a new job, a job token."""
    metadata = list(initial)
    if guard is not None and name == "GenerateScript" and generation:
        token = guard.job_token(generation, caller)
        if token is not None:
            metadata.append((JOB_TOKEN_KEY, token))
    if metadata:
        await context.send_initial_metadata(tuple(metadata))
