"""Provider workers: the core's HTTP model calls in processes of their own, on the other CPUs.

A core is one Python process on one CPU. On the real provider path most of a job's
CPU up to its first token is its model request: the SDK's request (~0.9 ms here, of
which aiohttp's own ~0.4 ms; `scripts/sdk_request_costs.py`), then reading and parsing
every token's event. With `--provider-workers N` the core starts N worker processes
(`server.providers.worker_process`) and each HTTP provider (OpenAI, Anthropic, local) in
the stage chains becomes an `OffloadedProvider`: a call is a frame to the worker with
the fewest calls, and its text comes back coalesced by the stage's delta window
(`server.providers.worker_frames`). Many streams' frames share one socket read and one
write per turn of the loop. The synthetic writer stays in the core: it has no request
to send.

What stays in the core: the router (timeouts, retries, fallbacks, breakers, metrics),
which sees an offloaded provider as any other. Cancelling the stream sends `cancel`
and the worker closes the HTTP stream.

A worker that answers none of the core's pings (one every HEARTBEAT_SECONDS) for
WEDGED_SECONDS (stopped, or stuck in a call that never yields its loop) is killed:
its socket staying open, it would otherwise keep its calls hanging until the router's
timeouts, and take new ones. A busy worker answers within a turn of its loop.

A worker that exits fails its calls as `worker_lost` ProviderFailures, and is started
again: at once when it had run for MAX_RESTART_PAUSE_SECONDS, else after a pause that
doubles while it keeps failing (`RESTART_PAUSE_SECONDS` up to `MAX_RESTART_PAUSE_SECONDS`).
The router calls the same provider again at once for each, from the text already
delivered and without charging its breaker: the provider did not fail, this process did.
A call made while no worker serves but one is being started waits for it, up to
WORKER_WAIT_SECONDS (and within the router's first-token timeout), so that one worker's
exit costs its calls a restart's wait, not their jobs. With none coming (the pool
closing, or that wait over) the call fails as `worker_lost` too. The workers' CPU is the
core's: the load tool counts them as `core worker`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import pickle
import socket
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Final

from server import logs
from server.config import MAX_PROVIDER_WORKERS, ProvidersConfig
from server.providers.base import Prompt, TokenUsage
from server.providers.body_pacing import current_pacing
from server.providers.errors import WORKER_LOST, ProviderFailure
from server.providers.worker_frames import (
    Frame,
    FrameProtocol,
    encode_prompt,
    failure_of,
)

log = logging.getLogger(__name__)

WORKER_MODULE: Final = "server.providers.worker_process"
#: How long a worker may take to import the SDKs and answer `ready`.
STARTUP_SECONDS: Final = 30.0
#: How long a stopping worker gets to close its calls before it is killed: under the
#: core's limit for closing its parts at shutdown (`server.app.CLOSE_SECONDS`), so that a
#: lingering worker is killed by its own stop, which then goes on to close the clients.
STOP_SECONDS: Final = 3.0
#: How often the core pings each worker, and how long a worker may leave its pings
#: unanswered before it is taken for wedged and killed.
HEARTBEAT_SECONDS = 2.0
WEDGED_SECONDS = 10.0
RESTART_PAUSE_SECONDS: Final = 0.5
MAX_RESTART_PAUSE_SECONDS: Final = 10.0
#: How long a call waits for a worker while none serves and one is being started: a
#: restart's pause and start (~1 s of importing the SDK here, more on a busy machine).
#: Never more than FIRST_TOKEN_SHARE of the router's first-token timeout, so that the
#: wait ends as the core's `worker_lost` before the router times the provider out.
WORKER_WAIT_SECONDS = 15.0
FIRST_TOKEN_SHARE = 0.8

_Usage = tuple[int, int, bool, str]  # usage as reported, and how the text ended


class _Exact:
    """A call's text continues its partial exactly (`TokenUsage.exact_continuation`)."""


_EXACT: Final = _Exact()
_Item = str | _Usage | ProviderFailure | _Exact


class _Call:
    """One model call on a worker: its text, end or failure as they come."""

    __slots__ = ("_items", "_waiter", "ended", "id", "link", "provider")

    def __init__(self, call_id: int, provider: str, link: _Link | None) -> None:
        self.id = call_id
        self.provider = provider
        self.link = link
        self._items: deque[_Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False

    def push(self, item: _Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> _Item:
        items = self._items
        while not items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return items.popleft()


class _Link:
    """One worker process and the socket to it."""

    def __init__(self, pool: ProviderWorkers, index: int) -> None:
        self._pool = pool
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.protocol = FrameProtocol(self.on_frame, self.on_lost)
        self.calls: dict[int, _Call] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Ready and not lost: it takes calls.
        self.serving = False
        self.lost = False
        #: When the worker last answered a ping (or became ready), and the next heartbeat.
        self._heard = 0.0
        self._beat: asyncio.TimerHandle | None = None
        self._beat_due = 0.0
        self._pings = 0

    async def start(self, config: ProvidersConfig) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            log_format, log_level = logs.settings()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                f"--fd={theirs.fileno()}",
                f"--log-format={log_format}",
                f"--log-level={log_level}",
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        await loop.connect_accepted_socket(lambda: self.protocol, sock=ours)
        self.send(["config", base64.b64encode(pickle.dumps(config)).decode("ascii")])
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), STARTUP_SECONDS)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(
                f"provider worker {self.index} did not start within {STARTUP_SECONDS:.0f}s"
            ) from None
        if self.lost:  # it exited right after `ready`: a start that failed, retried as one
            raise RuntimeError(f"provider worker {self.index} exited")
        self.serving = True
        self._heard = loop.time()
        self._schedule_beat(loop)

    def _schedule_beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._beat_due = loop.time() + HEARTBEAT_SECONDS
        self._beat = loop.call_at(self._beat_due, self._heartbeat)

    def _stop_beat(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    def _heartbeat(self) -> None:
        """Ping the worker; kill it if it answered no ping for WEDGED_SECONDS.

        A beat that comes late means the core's own loop stood still, and the worker's
        answers may be waiting unread in the socket (uvloop runs due timers before it
        polls): that beat only pings, and the next one judges."""
        self._beat = None
        if self.lost:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        silent = now - self._heard
        on_time = now - self._beat_due < HEARTBEAT_SECONDS
        if on_time and silent > WEDGED_SECONDS:
            log.warning(
                "provider worker %d answered no ping for %.1fs; killing it",
                self.index,
                silent,
            )
            if self.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()  # its socket closes: on_lost fails its calls
            return
        self._pings += 1
        self.send(["ping", self._pings])
        self._schedule_beat(loop)

    def on_frame(self, frame: Frame) -> None:
        kind = frame[0]
        if kind == "text":
            call = self.calls.get(frame[1])
            if call is not None:
                call.push(frame[2])
            return
        if kind == "exact":
            call = self.calls.get(frame[1])
            if call is not None:
                call.push(_EXACT)
            return
        if kind == "end" or kind == "fail":
            call = self.calls.pop(frame[1], None)
            if call is not None:
                call.ended = True
                call.push(
                    (int(frame[2]), int(frame[3]), bool(frame[4]), str(frame[5]))
                    if kind == "end"
                    else failure_of(frame)
                )
        elif kind == "pong":
            # A worker whose loop turns answers each ping within a turn, however busy: only
            # pongs are timed, so the text frames' path does no work for the heartbeat.
            self._heard = asyncio.get_running_loop().time()
        elif kind == "ready":
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == "fatal":
            if not self.ready.done():
                self.ready.set_exception(
                    RuntimeError(f"provider worker {self.index} could not start: {frame[1]}")
                )
        else:
            log.warning("provider worker %d sent an unknown frame %r", self.index, kind)

    def on_lost(self, exc: Exception | None) -> None:
        was_serving = self.serving
        self.lost = True
        self.serving = False
        self._stop_beat()
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"provider worker {self.index} exited"))
            self.ready.exception()  # retrieved: start() raises its own
        calls = list(self.calls.values())
        self.calls.clear()
        for call in calls:
            call.ended = True
            call.push(ProviderFailure(call.provider, WORKER_LOST, "the provider worker exited"))
        if was_serving:  # one that failed to start is its starter's to retry
            self._pool.lost(self)

    def send(self, frame: Frame) -> None:
        writer = self.protocol.writer
        assert writer is not None  # connected before the link is used
        writer.send(frame)

    async def stop(self) -> None:
        """Close the socket (the worker cancels its calls and exits); kill it if it lingers."""
        self._stop_beat()
        if self.protocol.writer is not None:
            self.protocol.writer.close()
        process = self.process
        if process is None:
            return
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
        finally:
            # Also when the stop itself is cut short (the core's own close limit): a worker
            # ignores SIGTERM and must not outlive its core.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        if process.returncode is None:
            await process.wait()


class ProviderWorkers:
    """The core's provider worker processes: started, given calls, restarted, stopped."""

    def __init__(self, config: ProvidersConfig, count: int, window_seconds: float) -> None:
        if not 1 <= count <= MAX_PROVIDER_WORKERS:
            raise ValueError(f"provider workers must be 1-{MAX_PROVIDER_WORKERS}, not {count}")
        self._config = config
        self._count = count
        self.window_seconds = max(0.0, window_seconds)
        self._links: list[_Link] = []
        self._next_id = 0
        self._closing = False
        self._restarts: set[asyncio.Task[None]] = set()
        #: Per worker index: the pause before its last start, and when it last started.
        self._pauses: dict[int, float] = {}
        self._started: dict[int, float] = {}
        self.restarted = 0
        #: Called once for each worker started again (the core counts them in a metric).
        self.on_restart: Callable[[], None] = lambda: None
        #: Set (and replaced) when a worker starts serving again: calls waiting for one.
        self._serving_again: asyncio.Future[None] | None = None

    @property
    def live(self) -> int:
        """Workers running and ready now."""
        return len(self._serving())

    def _serving(self) -> list[_Link]:
        return [link for link in self._links if link.serving]

    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [
            link.process.pid for link in self._links if link.process is not None and not link.lost
        ]

    async def start(self) -> None:
        """Start every worker; raises if one does not come up."""
        links = [_Link(self, index) for index in range(self._count)]
        self._links = links
        results = await asyncio.gather(
            *(link.start(self._config) for link in links), return_exceptions=True
        )
        failed = [result for result in results if isinstance(result, BaseException)]
        if failed:
            await self.close()
            raise failed[0]
        now = asyncio.get_running_loop().time()
        self._started = dict.fromkeys(range(self._count), now)
        log.info("started %d provider workers", self._count)

    async def open(self, provider: str, model: str, window: float, prompt: Prompt) -> _Call:
        """Send a call to the least busy worker; its items come on the returned _Call.

        With no worker serving but one being started, waits for it (WORKER_WAIT_SECONDS)."""
        live = self._serving()
        if not live and self._restarts and not self._closing:
            first_token = self._config.router.first_token_timeout_seconds
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    min(WORKER_WAIT_SECONDS, FIRST_TOKEN_SHARE * first_token)
                ):
                    while not live and self._restarts and not self._closing:
                        if self._serving_again is None:
                            self._serving_again = asyncio.get_running_loop().create_future()
                        await asyncio.shield(self._serving_again)
                        live = self._serving()
        self._next_id += 1
        call_id = self._next_id
        if not live:
            call = _Call(call_id, provider, None)
            call.ended = True
            call.push(ProviderFailure(provider, WORKER_LOST, "no provider worker is running"))
            return call
        link = min(live, key=lambda candidate: len(candidate.calls))
        call = _Call(call_id, provider, link)
        link.calls[call_id] = call
        link.send(["call", call_id, provider, model, window, encode_prompt(prompt)])
        return call

    def close_call(self, call: _Call) -> None:
        """The caller is done with `call`: the worker stops it if it still runs."""
        link = call.link
        if call.ended or link is None:
            return
        call.ended = True
        if link.calls.pop(call.id, None) is not None and not link.lost:
            link.send(["cancel", call.id])

    def lost(self, link: _Link) -> None:
        """A worker's socket closed: start another in its place unless the pool is closing."""
        if self._closing or link not in self._links:
            return
        log.warning("provider worker %d exited; starting another", link.index)
        task = asyncio.get_running_loop().create_task(self._restart(link))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)
        task.add_done_callback(lambda _: self._wake_waiting())

    async def _restart(self, old: _Link) -> None:
        loop = asyncio.get_running_loop()
        lived = loop.time() - self._started.get(old.index, float("-inf"))
        # One that lived a while starts again at once (its calls wait for it); one that keeps
        # dying waits ever longer.
        pause = (
            0.0
            if lived > MAX_RESTART_PAUSE_SECONDS
            else self._longer(self._pauses.get(old.index, 0.0))
        )
        with contextlib.suppress(Exception):
            await old.stop()
        while not self._closing:
            self._pauses[old.index] = pause
            await asyncio.sleep(pause)
            if self._closing:
                return
            link = _Link(self, old.index)
            self._links[old.index] = link
            try:
                await link.start(self._config)
            except Exception as error:
                log.warning("provider worker %d did not start: %s", old.index, error)
                with contextlib.suppress(Exception):
                    await link.stop()
                pause = self._longer(pause)
                continue
            self._started[old.index] = loop.time()
            self.restarted += 1
            self.on_restart()
            self._wake_waiting()
            return

    @staticmethod
    def _longer(pause: float) -> float:
        """The pause after `pause` for a worker that failed again: double, within bounds."""
        return min(MAX_RESTART_PAUSE_SECONDS, max(RESTART_PAUSE_SECONDS, 2 * pause))

    def _wake_waiting(self) -> None:
        """Calls waiting for a worker look again (one serves, or none is coming)."""
        waiting, self._serving_again = self._serving_again, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def close(self) -> None:
        """Stop every worker; calls still running end as `worker_lost` failures."""
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        self._wake_waiting()
        await asyncio.gather(*(link.stop() for link in self._links), return_exceptions=True)


class OffloadedProvider:
    """A provider whose calls run in a provider worker: the same name, model and errors."""

    def __init__(self, name: str, model: str, workers: ProviderWorkers) -> None:
        self._name = name
        self._model = model
        self._workers = workers

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def stream(self, prompt: Prompt, usage: TokenUsage) -> AsyncIterator[str]:
        workers = self._workers
        # A paced stage (the write stage's coalescer) gets its text by the window; others,
        # such as the plan's collected outline, as the worker reads it.
        window = workers.window_seconds if current_pacing() is not None else 0.0
        call = await workers.open(self._name, self._model, window, prompt)
        try:
            while True:
                item = await call.next()
                if type(item) is str:
                    yield item
                elif isinstance(item, ProviderFailure):
                    raise item
                elif item is _EXACT:
                    usage.exact_continuation = True
                else:
                    assert isinstance(item, tuple)
                    usage.input_tokens, usage.output_tokens, usage.reported, usage.stop = item
                    return
        finally:
            workers.close_call(call)
