"""X-RateLimit-* on every answer the core's rate limit counted, not only on 429.

The core reports the caller's window as `x-ratelimit-*` metadata of every call
it counts: trailing metadata of unary calls (and of any failed call), initial
metadata of event streams (server.services.calls). For unary calls
`UnaryRateLimitCapture`, an interceptor on the gateway's channel, copies it into
the `RateLimitState` of the HTTP request being served — found through a context
variable the `identify` middleware sets, which the calls' tasks inherit. Event
streams are not intercepted: an intercepted stream costs a task and a wrapping
iterator for its whole life, so the routes that open one hand its initial
metadata to `take` themselves, before the answer starts (gateway.sse,
gateway.routes_generations). `add_rate_limit_headers` (`on_response_prepare`)
puts the latest state on the answer, JSON and SSE alike, before its first byte.
A request that made no counted call (health, metrics, the page; auth off) gets
none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import TypeVar

import grpc.aio
from aiohttp import web

from gateway.errors import RATE_LIMIT_HEADERS


class RateLimitState:
    """The latest X-RateLimit-* headers the core reported for one HTTP request."""

    __slots__ = ("headers",)

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def take(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        """Keep the x-ratelimit-* entries of `metadata` (all three, or none)."""
        found = {
            RATE_LIMIT_HEADERS[key]: value
            for key, value in metadata or ()
            if key in RATE_LIMIT_HEADERS and isinstance(value, str) and value.isdigit()
        }
        if len(found) == len(RATE_LIMIT_HEADERS):
            self.headers = found


#: The state of the HTTP request being served (set by the `identify` middleware).
CURRENT: ContextVar[RateLimitState | None] = ContextVar("scriptgen_rate_limit", default=None)
STATE = web.RequestKey("rate_limit", RateLimitState)


def begin(request: web.Request) -> None:
    """Give `request` a state that the calls made while serving it fill."""
    state = RateLimitState()
    request[STATE] = state
    CURRENT.set(state)


def take(request: web.Request, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
    """Keep the x-ratelimit-* entries of a stream's initial `metadata` for `request`."""
    state = request.get(STATE)
    if state is not None:
        state.take(metadata)


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the latest X-RateLimit-* state on every counted answer."""
    state = request.get(STATE)
    if state is not None:
        for name, value in state.headers.items():
            response.headers.setdefault(name, value)


RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


def interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The gateway channel's interceptors that capture the core's rate-limit state."""
    return [UnaryRateLimitCapture()]


class UnaryRateLimitCapture(grpc.aio.UnaryUnaryClientInterceptor):
    """Copies a unary call's x-ratelimit-* trailing metadata into the request's state."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, RequestT],
            Awaitable[grpc.aio.UnaryUnaryCall[RequestT, ResponseT]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: RequestT,
    ) -> ResponseT | grpc.aio.UnaryUnaryCall[RequestT, ResponseT]:
        call = await continuation(client_call_details, request)
        state = CURRENT.get()
        if state is not None:
            # Trailing metadata comes with the answer, which the caller awaits anyway.
            state.take(await call.trailing_metadata())
        return call
