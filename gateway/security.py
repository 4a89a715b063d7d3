"""What the gateway does for security: forwards credentials, CORS, security headers.

The gateway checks no key itself — the core does, so a limit or a revocation
holds behind any number of gateways. It forwards `Authorization` as the
`authorization` metadata of every call; on `GET /v1/generations/{g}/events`
only, a job token may come as `?access_token=` instead (what a plain
EventSource, which cannot send headers, uses — the eventsUrl carries it). The
access log never shows query strings, so tokens stay out of it.

CORS: only origins in SCRIPTGEN_CORS_ORIGINS (comma-separated, e.g.
`https://writers.example`; empty: none — the web page is same-origin) get
`Access-Control-Allow-*` headers; credentials are bearer tokens, never cookies,
so `Allow-Credentials` is never sent. Every answer carries nosniff, a
no-referrer policy and frame denial; the page adds its CSP (routes_page).
"""

from __future__ import annotations

from typing import Final

import grpc
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from gateway import state
from gateway.codec import json_response
from gateway.errors import ApiError, Reason
from gateway.inputs import single_header

#: The one route where `?access_token=` (a job token) may stand in for the header.
EVENTS_ROUTE: Final = "/v1/generations/{generation}/events"
ACCESS_TOKEN_PARAMETER: Final = "access_token"
_MAX_CREDENTIALS: Final = 1024
_ALLOWED_METHODS: Final = "GET, POST, PATCH, DELETE, OPTIONS"
_ALLOWED_HEADERS: Final = (
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id,"
    " X-Preferred-Provider, X-Disabled-Providers, X-Feature-Flags"
)
_EXPOSED_HEADERS: Final = (
    "Link, Location, Retry-After, X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining,"
    " X-RateLimit-Reset"
)
#: Sent on every answer (the page's own headers, set first, win).
SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def credentials(request: web.Request) -> str | None:
    """The `authorization` value to forward: the header, else an events-route access_token;
    ApiError (400) for a header that is not printable ASCII, or repeated with another value."""
    header = single_header(request, hdrs.AUTHORIZATION)
    if header is not None:
        # Sent on as gRPC metadata, which holds printable ASCII only.
        if not (header.isascii() and header.isprintable()):
            raise ApiError.invalid(
                Reason.INVALID_HEADER,
                "Invalid Authorization header.",
                {"Authorization": "Must be printable ASCII."},
            )
        return header.strip()[:_MAX_CREDENTIALS] or None
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical == EVENTS_ROUTE and request.method == "GET":
        token = request.query.get(ACCESS_TOKEN_PARAMETER, "")
        if token and token.isascii() and token.isprintable() and len(token) <= _MAX_CREDENTIALS:
            return f"Bearer {token}"
    return None


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return None
    return origin if origin in request.app[state.CONFIG].cors_origins else None


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights of allowed origins; other origins get a 403 JSON error
    (ORIGIN_NOT_ALLOWED) and no CORS headers at all."""
    if (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    ):
        origin = _allowed_origin(request)
        if origin is None:
            refusal = ApiError.gateway(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.ORIGIN_NOT_ALLOWED,
                "Cross-origin requests from this origin are not allowed.",
            )
            return json_response(
                refusal.body(), status=refusal.http_status, headers={"Vary": "Origin"}
            )
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": _ALLOWED_METHODS,
                "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    return await handler(request)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: security headers, and CORS headers for an allowed origin."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    origin = _allowed_origin(request)
    if origin is not None and "Access-Control-Allow-Origin" not in response.headers:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED_HEADERS
        response.headers.add("Vary", "Origin")
