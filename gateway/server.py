"""Runs a gateway app on an HTTP port: start, the bound port, stop."""

from __future__ import annotations

import asyncio

from aiohttp import web
from scriptgen._heap import freeze_startup_heap, thaw_heap

from gateway import state
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.http_errors import GatewayRunner


class GatewayServer:
    """The gateway listening on `config.http_address` (port 0 picks a free port)."""

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> None:
        # Its connections answer requests aiohttp cannot parse in JSON (gateway.http_errors).
        runner = GatewayRunner(
            create_app(self._config),
            # A client that leaves cancels its handler, and so its upstream gRPC call.
            handler_cancellation=True,
            shutdown_timeout=self._config.drain_seconds,
            # gateway/access_log.py writes the one access line; aiohttp's own would log
            # query strings, and so the job tokens of eventsUrls.
            access_log=None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                self._config.http_host,
                self._config.http_port,
                reuse_port=self._config.reuse_port or None,
                backlog=self._config.listen_backlog,
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        # A full collection in a burst of new streams paused a worker's loop 24 ms.
        freeze_startup_heap()

    @property
    def port(self) -> int:
        """The bound HTTP port; only valid after `start()`."""
        if self._port is None:
            raise RuntimeError("GatewayServer is not started")
        return self._port

    async def stop(self) -> None:
        """Stop: `/readyz` answers 503 for `stop_delay_seconds` while requests are still
        served; then the listener closes, event streams end cleanly (`drain_seconds` for
        open requests to finish, as long again for those cancelled then to end), and the
        channel to the core closes.

        The stop runs in a task of its own: a second call waits for the first one's, and a
        caller cancelled meanwhile leaves it to finish (the app's cleanup still runs)."""
        if self._stopping is None:
            if self._runner is None:
                return
            runner, self._runner = self._runner, None
            self._stopping = asyncio.ensure_future(self._stop(runner))
        await asyncio.shield(self._stopping)

    async def _stop(self, runner: web.AppRunner) -> None:
        runner.app[state.STOPPING].announce()
        if self._config.stop_delay_seconds > 0:
            await asyncio.sleep(self._config.stop_delay_seconds)
        await runner.cleanup()
        thaw_heap()
