"""A TCP proxy between the browser and the gateway whose connection can be cut for real.

`cut()` closes every open connection and, until `restore()`, closes new ones at
once — the browser sees a dropped network, not an HTTP error. Every request head
the browser sent is kept, so a test can check what the gateway was asked (e.g.
that EventSource resumed with `Last-Event-ID`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

_CHUNK = 65536


class CuttableProxy:
    """Forwards 127.0.0.1:`port` to `upstream_port`; see the module docstring."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._down = False
        #: The raw bytes each connection sent upstream, in connection order.
        self.sent: list[bytearray] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until `restore()`."""
        self._down = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._down = False

    def requests(self) -> list[str]:
        """The request heads (request line and headers) sent so far, lower-cased."""
        heads: list[str] = []
        for sent in self.sent:
            for part in bytes(sent).split(b"\r\n\r\n"):
                text = part.decode("latin-1").lower()
                if text.startswith(("get ", "post ", "patch ", "delete ", "put ")):
                    heads.append(text)
        return heads

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.transport.abort()
            return
        sent = bytearray()
        self.sent.append(sent)
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, sent)),
            asyncio.create_task(self._pump(up_reader, writer, None)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for end in (writer, up_writer):
                self._writers.discard(end)
                end.transport.abort()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray | None
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while chunk := await reader.read(_CHUNK):
                if record is not None:
                    record.extend(chunk)
                writer.write(chunk)
                await writer.drain()


@contextlib.asynccontextmanager
async def cuttable_proxy(upstream_port: int) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(upstream_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
