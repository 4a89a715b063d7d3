"""Requests aiohttp cannot parse answer like every other gateway error: JSON, no echo.

aiohttp refuses a request line (method, URL, version) or a header line over
8190 bytes, more than 128 headers, or bytes that are not HTTP before any
application code runs: its `RequestHandler.handle_error` answers a plain-text
400 that quotes the offending input and logs a traceback at ERROR. aiohttp has
no setting for that answer (aio-libs/aiohttp#3287), so the gateway's runner
gives each connection a handler whose `handle_error` answers those requests
with the Google-style JSON body (INVALID_ARGUMENT, reason MALFORMED_REQUEST)
and the security headers, quoting nothing, and logs one line without a
traceback. Every other error keeps aiohttp's handling.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from aiohttp.web_request import BaseRequest

from gateway.errors import ApiError, Reason
from gateway.security import SECURITY_HEADERS

_log = logging.getLogger(__name__)

#: aiohttp's limits (its defaults, which the gateway keeps): bytes of the request line
#: and of each header line, and headers per request.
MAX_LINE_BYTES: Final = 8190
MAX_HEADERS: Final = 128


def malformed_request(error: BadHttpMessage) -> ApiError:
    """The answer to a request aiohttp refused to parse; names the limit, not the input."""
    if isinstance(error, LineTooLong):
        message = (
            f"The request line (method, URL) or a header line is longer than"
            f" {MAX_LINE_BYTES} bytes."
        )
        field = "request"
    elif "Too many headers" in error.message:
        message = f"The request has more than {MAX_HEADERS} headers."
        field = "headers"
    else:
        message = "The request is not valid HTTP/1.1."
        field = "request"
    return ApiError.invalid(Reason.MALFORMED_REQUEST, message, {field: message})


class _JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, answering unparseable requests in JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)
        error = malformed_request(exc)
        # A port scanner's first bytes are not HTTP at all: aiohttp logs those at DEBUG too.
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
        _log.log(
            level,
            "refused a request from %s that is not valid HTTP: %s: %s",
            request.remote or "?",
            type(exc).__name__,
            error.message,
            extra={"status": 400, "remote": request.remote or ""},
        )
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun; the connection is closed instead")
        response = web.json_response(
            error.body(), status=error.http_status, headers=SECURITY_HEADERS
        )
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    """aiohttp's Server, whose connections use `_JsonErrorRequestHandler`."""

    def __call__(self) -> web.RequestHandler:
        # As aiohttp's own __call__, with the subclass.
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections answer unparseable requests in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The Server the app built, with our __call__: the subclass adds no state, and
        # rebuilding the Server would mean copying the app's private handler arguments.
        server.__class__ = _JsonErrorServer
        return server
