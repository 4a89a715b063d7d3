"""Paced reads of a provider's streamed body: read once per delta cut, not once per token.

A model's API sends every token as its own event, and every event arrives in
its own TCP segment: one wake of the loop, one `read()`, one pass of the HTTP
parser and one step of every async generator between the socket and the
coalescer, per token. But the coalescer sends the text on only at its cuts,
about once per window (`server.jobs.coalescer`). So once a cut is due, nothing
read before it is needed sooner: the provider's socket is left unread until
shortly before the cut (`READ_LEAD_SECONDS`), and the kernel gathers the
tokens meanwhile. One read then takes them all, in time for the cut; a token
that arrives after that read, in the last few milliseconds before the cut, goes
with the next one.

The consumer says when it needs the body again (`ReadPacing.resume_at`; None:
now, e.g. before the first token, which goes out at once). It is found through
a context variable set around the stage's provider call (`paced_reads`), as the
SDKs' request path passes nothing of ours down to the HTTP transport
(`server.providers.http_transport`), which does the holding; a provider whose
text has ended reads the rest of its body `unpaced()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from typing import Protocol, TypeVar

#: How long before the consumer's time the socket is read again: the read, the parsing and
#: the hand-over to the coalescer take a loop turn or two, and must land before the cut.
READ_LEAD_SECONDS = 0.006
#: Holds shorter than this are not worth a timer: the body is read on at once.
MIN_HOLD_SECONDS = 0.004
#: No hold is longer than this, whatever the consumer asks.
MAX_HOLD_SECONDS = 1.0
#: How long the rest of a body is read once its text has ended (the usage chunk, the end
#: marker, its blank line): a body read to its end leaves its connection for the next
#: request, but a server that keeps it open longer, or never sends the end marker, must not
#: hold the call (its text is complete).
REST_OF_BODY_SECONDS = 1.0

#: What one read of a body's events brings (`event_stream.event_batches`).
Batch = TypeVar("Batch")


class ReadPacing(Protocol):
    """When the reader of a streamed body needs its next bytes."""

    def resume_at(self) -> float | None:
        """The loop time to read the body again by; None to read on at once."""


_PACING: ContextVar[ReadPacing | None] = ContextVar("scriptgen_read_pacing", default=None)


@contextmanager
def paced_reads(pacing: ReadPacing | None) -> Iterator[None]:
    """Requests sent inside this block have their streamed bodies read as `pacing` asks (as
    they come with None); bodies read inside it too, as the pacing is looked up at each
    read."""
    token = _PACING.set(pacing)
    try:
        yield
    finally:
        _PACING.reset(token)


def unpaced() -> AbstractContextManager[None]:
    """Bodies read inside this block are read as they come (the rest of a body whose text
    has ended: its end should not wait for a cut)."""
    return paced_reads(None)


def current_pacing() -> ReadPacing | None:
    """The pacing of the provider call running now, if any (looked up at each read, in the
    task that reads)."""
    return _PACING.get()


async def read_rest(
    body: AsyncIterator[bytes],
    events: AsyncIterator[Batch] | None = None,
    read: Callable[[Batch], bool] | None = None,
) -> None:
    """Read what is left of a body whose text has ended (its stop reason or end marker came),
    as it comes and for REST_OF_BODY_SECONDS at most: first `events`, each batch handed to
    `read` until it says the end marker came (the usage chunk OpenAI sends after the finish
    reason is still booked), then the body's last bytes. Nothing that goes wrong meanwhile
    concerns the text, not a cut connection, a timeout nor a malformed chunk: the caller
    closes the response after, and an unfinished body closes its connection."""
    with unpaced(), suppress(Exception):
        async with asyncio.timeout(REST_OF_BODY_SECONDS):
            if events is not None and read is not None:
                async for batch in events:
                    if read(batch):
                        break
            async for _ in body:
                pass  # HTTP/1.1 reuses the connection once the body is read to its end
