"""A provider worker: the core's HTTP model calls, run in a process of their own.

    python -m server.providers.worker_process --fd N [--log-format json] [--log-level INFO]

The core (`server.providers.worker_pool`) starts it with one end of a Unix socket pair
as file descriptor N and sends the providers' configuration as the first frame; the
worker builds the same providers the core would (`server.providers.factory`: the SDK
clients over the core's aiohttp transport) and answers `ready`. Then each `call` frame
runs one provider call in a task of its own, its text sent back as `text` frames (after
an `exact` frame when it continues its partial exactly, a prefill) and
its end as `end` (with the usage the provider reported and how its text ended) or
`fail` (the ProviderFailure, its kind and Retry-After as they were); `cancel` cancels that task,
which closes the model's HTTP stream. Each `ping` is answered by a `pong`: the core
kills a worker that answers nothing for long. The frames are `server.providers.worker_frames`.

A call made with a delta window has its body read once per window, on the same clock
grid as the core's coalescer (`server.jobs.coalescer`, whose cut logic it runs), and
the text of each cut is one frame; the first text goes at once.

When the socket closes (the core stopped, or died) every call is cancelled and the
worker exits: it never outlives its core. It ignores SIGINT and SIGTERM: a Ctrl-C in a
terminal reaches the whole process group, and the core, draining its jobs on the
signal, still needs its calls; it closes the socket once they are done.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import pickle
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence

import uvloop
from google.protobuf.message import Message
from scriptgen._heap import freeze_startup_heap
from scriptgen.v1 import generation_pb2

from server import logs
from server.config import ProvidersConfig, SyntheticConfig
from server.jobs.coalescer import DeltaCoalescer
from server.providers.base import Provider, TokenUsage
from server.providers.body_pacing import paced_reads
from server.providers.errors import ProviderFailure, classify
from server.providers.factory import StageProviders, build_providers
from server.providers.worker_frames import (
    Frame,
    FrameProtocol,
    FrameWriter,
    decode_prompt,
    failure_frame,
)

log = logging.getLogger(__name__)


class _TextFrames:
    """Where a call's coalescer sends its cuts: one `text` frame each (a `DeltaSink`)."""

    __slots__ = ("_call", "_writer")

    def __init__(self, call: int, writer: FrameWriter) -> None:
        self._call = call
        self._writer = writer

    def emit_now(self, kind: str, payload: Message) -> bool:
        assert isinstance(payload, generation_pb2.GenerationEvent.TextDelta)
        self._writer.send(["text", self._call, payload.text])
        return True

    async def emit(self, kind: str, payload: Message) -> object:
        return self.emit_now(kind, payload)


class Worker:
    """Serves the core's calls on one socket until it closes."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.protocol = FrameProtocol(self.on_frame, self.on_lost)
        self._stages: StageProviders | None = None
        self._providers: dict[tuple[str, str], Provider] = {}
        self._calls: dict[int, asyncio.Task[None]] = {}
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def on_frame(self, frame: Frame) -> None:
        kind = frame[0]
        if kind == "call":
            _, call, provider, model, window, prompt = frame
            self._calls[call] = self._loop.create_task(
                self._run(call, str(provider), str(model), float(window), prompt)
            )
        elif kind == "ping":
            self._send(["pong", frame[1]])  # the core's heartbeat: this loop still turns
        elif kind == "cancel":
            task = self._calls.pop(frame[1], None)
            if task is not None:
                task.cancel()
        elif kind == "config":
            try:
                self._configure(pickle.loads(base64.b64decode(frame[1])))
            except Exception as error:
                # Said to the core, whose start fails with it; then this worker ends.
                log.exception("provider worker: the providers could not be built")
                self._writer().send(["fatal", f"{type(error).__name__}: {error}"])
                self._writer().close()
        else:
            log.warning("provider worker: unknown frame %r", kind)

    def on_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def _configure(self, config: ProvidersConfig) -> None:
        assert isinstance(config, ProvidersConfig)
        self._stages = build_providers(config, SyntheticConfig())
        for provider in (*self._stages.plan, *self._stages.write):
            self._providers[(provider.name, provider.model)] = provider
        freeze_startup_heap()
        self._send(["ready"])

    def _send(self, frame: Frame) -> None:
        self._writer().send(frame)

    async def _run(self, call: int, name: str, model: str, window: float, prompt: object) -> None:
        usage = TokenUsage()
        try:
            provider = self._providers.get((name, model))
            if provider is None:
                raise ProviderFailure(name, "bad_request", f"no provider {name}:{model} here")
            assert isinstance(prompt, dict)
            stream = provider.stream(decode_prompt(prompt), usage)
            try:
                if window > 0:
                    await self._paced(call, stream, window, usage)
                else:
                    first = True
                    async for chunk in stream:
                        if first:
                            first = False
                            self._announce(call, usage)
                        self._send(["text", call, chunk])
            finally:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()  # the HTTP stream, however the call ended
            self._send(
                ["end", call, usage.input_tokens, usage.output_tokens, usage.reported, usage.stop]
            )
        except ProviderFailure as failure:
            self._send(failure_frame(call, failure))
        except Exception as error:  # what the provider let through, as the router would see it
            self._send(failure_frame(call, classify(name, error)))
        finally:
            if self._calls.get(call) is asyncio.current_task():
                del self._calls[call]

    def _announce(self, call: int, usage: TokenUsage) -> None:
        """Before a call's first text: what the core's router must know of it by then."""
        if usage.exact_continuation:
            self._send(["exact", call])

    async def _paced(
        self, call: int, stream: AsyncIterator[str], window: float, usage: TokenUsage
    ) -> None:
        deltas = DeltaCoalescer(_TextFrames(call, self._writer()), window)
        try:
            with paced_reads(deltas):
                first = True
                async for chunk in stream:
                    if first:
                        first = False
                        self._announce(call, usage)
                    await deltas.add(chunk)
            await deltas.close()
        finally:
            deltas.abort()

    def _writer(self) -> FrameWriter:
        writer = self.protocol.writer
        assert writer is not None  # frames come only once the connection is made
        return writer

    async def close(self) -> None:
        """Cancel every call and close the SDK clients."""
        calls = list(self._calls.values())
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        if self._stages is not None:
            await self._stages.aclose()


async def serve(sock: socket.socket) -> None:
    """Serve the core on `sock` until it closes."""
    loop = asyncio.get_running_loop()
    worker = Worker()
    transport, _ = await loop.connect_accepted_socket(lambda: worker.protocol, sock=sock)
    try:
        await worker.closed
    finally:
        transport.close()
        await worker.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.providers.worker_process")
    parser.add_argument("--fd", type=int, required=True, help="the socket to the core")
    parser.add_argument("--log-format", default="json", choices=logs.FORMATS)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    for ignored in (signal.SIGINT, signal.SIGTERM):
        signal.signal(ignored, signal.SIG_IGN)  # the core says when: it closes the socket
    logs.configure(args.log_format, args.log_level)
    sock = socket.socket(fileno=args.fd)
    uvloop.run(serve(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
