"""A TCP proxy on port 0 that tests cut, stall and restart, to break gRPC links for real."""

from __future__ import annotations

import asyncio


class TcpProxy:
    """Forwards 127.0.0.1:port to an upstream host:port, byte for byte.

    * `stop()` closes the listener and aborts every open connection, as a
      crashed load balancer would; `start(port)` listens again on the same port.
    * `sever()` aborts the open connections but keeps listening.
    * `stall()` holds back everything the upstream sends (the link looks alive,
      nothing arrives) until `flow()`.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._port = 0
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._downstream_open = asyncio.Event()
        self._downstream_open.set()
        #: Connections accepted so far.
        self.connections = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", port or self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.sever()
        if server is not None:
            await server.wait_closed()

    async def sever(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        pumps = list(self._pumps)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    def stall(self) -> None:
        self._downstream_open.clear()

    def flow(self) -> None:
        self._downstream_open.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(upstream_writer)
        for pump in (
            self._pump(reader, upstream_writer, gate=None),
            self._pump(upstream_reader, writer, gate=self._downstream_open),
        ):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        gate: asyncio.Event | None,
    ) -> None:
        try:
            while chunk := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
