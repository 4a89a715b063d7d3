"""The frames between the core and its provider workers: one JSON array per line.

A provider worker (`server.providers.worker_process`) runs the model calls of the core's
HTTP providers in a process of its own, over one Unix socket. Each frame is a JSON
array on one line (orjson never writes a raw newline), its first element saying what
it is, its second the call's number where it has one:

| frame                                            | from   | means                        |
|--------------------------------------------------|--------|------------------------------|
| `["config", pickled]`                            | core   | the providers' configuration |
| `["ready"]`                                      | worker | providers built; calls taken |
| `["fatal", message]`                             | worker | they could not be; it ends   |
| `["call", id, provider, model, window, prompt]`  | core   | start a model call           |
| `["cancel", id]`                                 | core   | stop that call, send nothing |
| `["exact", id]`                                  | worker | its text continues the       |
|                                                  |        | partial exactly (a prefill); |
|                                                  |        | before its first `text`      |
| `["text", id, text]`                             | worker | the next piece of its text   |
| `["end", id, input, output, reported, stop]`     | worker | its end: usage, how it ended |
| `["fail", id, provider, kind, message, retry]`   | worker | a ProviderFailure            |
| `["ping", n]`                                    | core   | the heartbeat                |
| `["pong", n]`                                    | worker | its answer: the loop turns   |

`window` is the delta window of the stage that called (0: texts as they are read): the
worker then reads the model's body once per window, as the core would
(`server.providers.body_pacing`), and sends what one read brought as one frame.

Frames written in one turn of the loop go out in one write (`FrameWriter`), so many
streams' texts cost one system call on each side, not one each.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any, cast

import orjson
from scriptgen.v1 import project_pb2

from server.providers.base import Brief, Prompt
from server.providers.errors import ProviderFailure

log = logging.getLogger(__name__)

#: A line longer than this is no frame of ours: the connection is given up.
MAX_FRAME_BYTES = 64 * 1024 * 1024

Frame = list[Any]


def encode_prompt(prompt: Prompt) -> dict[str, Any]:
    """`prompt` as JSON-ready values (the project as its protobuf bytes, in base64)."""
    brief = prompt.brief
    return {
        "stage": int(prompt.stage),
        "system": prompt.system,
        "user": prompt.user,
        "outline": prompt.outline,
        "partial": prompt.partial,
        "project": base64.b64encode(brief.project.SerializeToString()).decode("ascii"),
        "title": brief.title,
        "description": brief.description,
        "episode": brief.episode_number,
    }


def decode_prompt(value: dict[str, Any]) -> Prompt:
    """The Prompt `encode_prompt` made."""
    project = project_pb2.Project.FromString(base64.b64decode(value["project"]))
    brief = Brief(project, str(value["title"]), str(value["description"]), int(value["episode"]))
    return Prompt(
        stage=int(value["stage"]),  # type: ignore[arg-type]
        system=str(value["system"]),
        user=str(value["user"]),
        brief=brief,
        outline=str(value["outline"]),
        partial=str(value["partial"]),
    )


def failure_frame(call: int, failure: ProviderFailure) -> Frame:
    """The `fail` frame of `failure`."""
    return ["fail", call, failure.provider, failure.kind, failure.message, failure.retry_after]


def failure_of(frame: Frame) -> ProviderFailure:
    """The ProviderFailure a `fail` frame carries."""
    _, _, provider, kind, message, retry_after = frame
    return ProviderFailure(
        str(provider),
        str(kind),
        str(message),
        retry_after=None if retry_after is None else float(retry_after),
    )


class FrameWriter:
    """Writes frames to a transport, every frame of one loop turn in one write."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def send(self, frame: Frame) -> None:
        """Queue `frame`; it is written at the end of this turn of the loop."""
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(orjson.dumps(frame))

    def _flush(self) -> None:
        pending = self._pending
        self._pending = []
        if pending and not self._transport.is_closing():
            pending.append(b"")
            self._transport.write(b"\n".join(pending))

    def close(self) -> None:
        """Write what is queued, then close the transport."""
        self._flush()
        self._transport.close()


class FrameProtocol(asyncio.Protocol):
    """Splits what a socket brings into frames and hands each to `on_frame`."""

    def __init__(
        self,
        on_frame: Callable[[Frame], None],
        on_lost: Callable[[Exception | None], None],
    ) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._buffer = b""
        self.transport: asyncio.Transport | None = None
        #: Set as the connection is made, before any frame is handed on.
        self.writer: FrameWriter | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.writer = FrameWriter(self.transport)

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_FRAME_BYTES:
            assert self.transport is not None
            self.transport.abort()
            return
        on_frame = self._on_frame
        try:
            for line in lines:
                on_frame(orjson.loads(line))
        except Exception:
            # No frame of ours, or one its handler could not take: this end cannot trust
            # what follows, so the connection goes (a worker exits, the core starts another).
            log.exception("a frame could not be read; closing the connection")
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)
