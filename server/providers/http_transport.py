"""The HTTP transport under the SDK clients: aiohttp, with paced reads of streamed bodies.

The `openai` and `anthropic` SDKs send their requests through an `httpx2`
client; given this transport (`DefaultAioHttpClient(transport=sdk_transport())`,
their documented aiohttp client) the bytes go over aiohttp, whose C parser reads a
streamed body for less CPU per token than httpx2's own stack. Requests, auth,
retries, status errors and Retry-After stay the SDKs'. It is the SDKs' own
aiohttp transport plus one thing: a body is read as the provider call's
`ReadPacing` asks (`server.providers.body_pacing`), its socket left unread
between the coalescer's cuts.

aiohttp's errors are raised as httpx2's, the ones the SDKs turn into
`APITimeoutError` and `APIConnectionError`.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress

import aiohttp
import httpx2

from server.providers.body_pacing import MAX_HOLD_SECONDS, MIN_HOLD_SECONDS, current_pacing

#: What the SDKs' default clients allow (their DEFAULT_CONNECTION_LIMITS).
MAX_CONNECTIONS = 1000
KEEPALIVE_SECONDS = 5.0
#: Raised by a transport's pause or resume when it is closing or cannot do it.
_FLOW_CONTROL_ERRORS = (AttributeError, NotImplementedError, RuntimeError)


def sdk_transport() -> AiohttpTransport | None:
    """The transport for an SDK's `DefaultAioHttpClient(transport=...)`: this module's, or
    None (the SDK's own) behind an outbound proxy named in the environment (`HTTPS_PROXY`,
    `HTTP_PROXY`, `ALL_PROXY`): the SDK's client honours those only with its own transport,
    so there the body is read as it comes."""
    proxies = urllib.request.getproxies()
    if any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return None
    return AiohttpTransport()


@contextmanager
def _as_httpx(*, reading: bool) -> Iterator[None]:
    """aiohttp's exceptions as httpx2's (`reading`: while reading a body)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx2.ConnectTimeout(str(error)) from error
    except (aiohttp.ServerTimeoutError, TimeoutError) as error:
        raise httpx2.ReadTimeout(str(error)) from error
    except (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError) as error:
        raise httpx2.ProxyError(str(error)) from error
    except (aiohttp.NonHttpUrlClientError, aiohttp.InvalidUrlClientError) as error:
        raise httpx2.UnsupportedProtocol(str(error)) from error
    except aiohttp.ClientConnectorError as error:
        raise httpx2.ConnectError(str(error)) from error
    except aiohttp.ClientError as error:
        raise (httpx2.ReadError if reading else httpx2.ConnectError)(str(error)) from error


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The SDKs' TLS context (certifi's bundle, or SSL_CERT_FILE/SSL_CERT_DIR), loaded once
    per process for every provider's transport."""
    return httpx2.create_ssl_context(trust_env=True)


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends httpx2 requests over one aiohttp session (made on first use, on the running loop)."""

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        # Made now, at start-up: loading the CA bundle (and httpx2's TLS imports) takes tens of
        # milliseconds of the loop, which the first request of a burst would otherwise wait on.
        self._ssl = _tls_context()
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=self._keepalive_seconds,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._open()
        timeout = request.extensions.get("timeout", {})
        data: bytes | httpx2.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx2.RequestNotRead:
            data = request.stream  # type: ignore[assignment]  # an upload: aiohttp iterates it
            request.headers.pop("transfer-encoding", None)  # aiohttp chunks it itself
        with _as_httpx(reading=False):
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            # An error's body is read at once: the SDK raises with it.
            stream=PacedBody(response, paced=200 <= response.status < 300),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class PacedBody(httpx2.AsyncByteStream):
    """A response body read as its bytes come, or held unread until the reading task's
    `ReadPacing` (`body_pacing.current_pacing()`) needs them.

    A hold pauses the connection's reading (the kernel keeps what arrives) and a
    loop timer resumes it. A paused connection cannot reach the end of its body,
    there is never a hold once the body has ended, and closing the body ends any
    hold first: a connection goes back to the pool reading. Only a transport that
    is reading is paused, and only this body's connection is resumed, so aiohttp's
    own flow control keeps its pauses. Over TLS the pause holds back the decrypted
    stream only (the SSL layer keeps reading packets into its buffer): the parsing
    and the steps after it are saved, the socket reads are not.
    """

    def __init__(self, response: aiohttp.ClientResponse, *, paced: bool) -> None:
        self._response = response
        self._paced = paced
        self._held: asyncio.Transport | None = None
        self._release: asyncio.TimerHandle | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        while True:
            with _as_httpx(reading=True):
                chunk = await content.readany()
            if not chunk:
                return
            yield chunk
            if self._paced:
                # Looked up now, in the reading task: the provider may read the rest unpaced.
                pacing = current_pacing()
                if pacing is not None:
                    self._hold(pacing.resume_at())

    def _hold(self, until: float | None) -> None:
        """Leave the socket unread until loop time `until` (the reader has what it needs)."""
        if until is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if until - now < MIN_HOLD_SECONDS:
            return
        connection = self._response.connection
        if connection is None or self._response.content.is_eof():
            return  # the body has ended: its connection may already serve another request
        transport = connection.transport
        if transport is None or transport.is_closing() or not transport.is_reading():
            # Closing; or paused already, by a hold of ours still on (it ends on its own)
            # or by aiohttp's own flow control (which resumes it): not ours to take over.
            return
        try:
            transport.pause_reading()
        except _FLOW_CONTROL_ERRORS:
            return
        self._held = transport
        self._release = loop.call_at(min(until, now + MAX_HOLD_SECONDS), self._end_hold)

    def _end_hold(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None
        transport, self._held = self._held, None
        connection = self._response.connection
        if (
            transport is None
            or connection is None
            or connection.transport is not transport  # no longer this body's connection
            or transport.is_closing()
        ):
            return
        with suppress(*_FLOW_CONTROL_ERRORS):
            transport.resume_reading()

    async def aclose(self) -> None:
        self._end_hold()
        with _as_httpx(reading=True):
            self._response.release()  # an unfinished body closes its connection
            await self._response.wait_for_close()
