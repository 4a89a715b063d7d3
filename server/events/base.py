"""The event-log interface: one append-only log per job, read by any number of followers.

A log holds each event serialized once, as the bytes of its `GenerationEvent`:
about a seventh of the memory of a message object, and what a follower's gRPC
stream sends as it is (`follow_encoded`). `follow` parses them for callers
that want messages.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Protocol, runtime_checkable

from scriptgen.v1 import generation_pb2

#: The oneof kinds that end a job; every job's log ends with exactly one of them.
TERMINAL_KINDS = frozenset({"completed", "failed", "cancelled"})


def is_terminal(event: generation_pb2.GenerationEvent) -> bool:
    """Whether `event` is the last event of its job."""
    return event.WhichOneof("kind") in TERMINAL_KINDS


class EventLogConflict(RuntimeError):
    """An append that does not fit the log: a gap, a repeat, or after the terminal event."""


class LeaseTaken(EventLogConflict):
    """An append refused because another core holds the job's lease: that core ends the job.

    Only a log fenced by the writers' lease (`LeaseFenced`) refuses it.
    """


class EventLogBehind(EventLogConflict):
    """An append refused because the log ends before the writer's previous event.

    The log lost events it had taken (a Redis failover to a replica that missed
    the last writes): `last` is where it now stands.
    """

    def __init__(self, message: str, last: int) -> None:
        super().__init__(message)
        self.last = last


class EventLog(Protocol):
    """Append-only per-job logs. The job is the only writer of its log."""

    async def create(self, generation: str) -> None:
        """Start an empty log for a new job."""

    async def append(self, event: generation_pb2.GenerationEvent) -> None:
        """Append `event`, whose sequence is the log's last sequence + 1."""

    def writer_done(self, generation: str) -> None:
        """This process appends nothing more to `generation`'s log (its job's task ended)."""

    async def last_sequence(self, generation: str) -> int:
        """Sequence of the newest event; NotFound for an unknown or expired job."""

    async def ended(self, generation: str) -> bool:
        """Whether the log holds its terminal event; NotFound for an unknown or expired job."""

    async def end(self, generation: str) -> generation_pb2.GenerationEvent | None:
        """The log's terminal event, None while it has none; NotFound as `ended`."""

    def follow(
        self, generation: str, after_sequence: int
    ) -> AsyncIterator[generation_pb2.GenerationEvent]:
        """Events after `after_sequence`: stored, then live, up to the terminal event."""

    def follow_encoded(self, generation: str, after_sequence: int) -> AsyncGenerator[bytes, None]:
        """`follow`, each event as its serialized `GenerationEvent`, as the log holds it."""


@runtime_checkable
class LeaseFenced(Protocol):
    """An event log shared by cores (Redis) that can refuse a writer whose lease was taken."""

    def fence(self, owner: str) -> None:
        """From now on, refuse this process's appends to a job whose lease (`owner:{job}`,
        see server.jobs.coordination) a core other than `owner` holds: LeaseTaken."""


@runtime_checkable
class AppendsAtOnce(Protocol):
    """An event log whose append need not wait (the in-memory one): a job may append from a
    loop callback, without a task (`JobEvents.emit_now`)."""

    def append_now(self, event: generation_pb2.GenerationEvent) -> bool:
        """`EventLog.append`, complete when it returns True; False: nothing was done, and
        the caller awaits `append` instead."""


async def decoded(
    events: AsyncGenerator[bytes, None],
) -> AsyncIterator[generation_pb2.GenerationEvent]:
    """Serialized events (from `follow_encoded`) as messages."""
    parse = generation_pb2.GenerationEvent.FromString
    async with aclosing(events):
        async for wire in events:
            yield parse(wire)
