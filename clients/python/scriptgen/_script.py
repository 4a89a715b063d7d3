"""Putting a job's script back together from its events, and what the job ended with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scriptgen._errors import RPCError, StreamError
from scriptgen.v1 import generation_pb2, project_pb2

#: How a job ended.
Outcome = Literal["completed", "failed", "cancelled"]

TERMINAL_KINDS: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


def is_terminal(event: generation_pb2.GenerationEvent) -> bool:
    """Whether `event` is the last event of its job."""
    return event.WhichOneof("kind") in TERMINAL_KINDS


class ScriptMismatchError(StreamError):
    """A text delta does not continue the script where the previous one ended."""


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """A finished job as its events told it."""

    #: `generations/{generation}`.
    generation: str
    #: The script as streamed: every delta, in order.
    script: str
    #: How the job ended.
    outcome: Outcome
    #: The saved episode when the job completed.
    episode: project_pb2.Episode | None
    #: Why the job failed, as the same typed error a call would raise.
    error: RPCError | None
    #: Why the job was cancelled.
    cancel_reason: str
    #: The terminal event itself (usage, quality report, ...).
    terminal_event: generation_pb2.GenerationEvent
    #: Number of events seen, heartbeats included.
    event_count: int


class ScriptAssembler:
    """Feed it a job's events in sequence order; it keeps the script they spell.

    Offsets are checked, so a lost or repeated delta surfaces as an error
    instead of a quietly garbled screenplay. A `partial` assembler joins a job
    midway (after a replay point): its first delta sets where its text starts.
    """

    def __init__(self, *, partial: bool = False) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._partial = partial
        self._generation = ""
        self._event_count = 0
        self._terminal: generation_pb2.GenerationEvent | None = None

    @property
    def script(self) -> str:
        """The script so far (from the first delta seen, if `partial`)."""
        return "".join(self._parts)

    @property
    def finished(self) -> bool:
        """Whether the terminal event has been fed."""
        return self._terminal is not None

    def feed(self, event: generation_pb2.GenerationEvent) -> str:
        """Take one event; returns the text it added to the script ("" if none)."""
        self._event_count += 1
        self._generation = self._generation or event.generation
        kind = event.WhichOneof("kind")
        if kind in TERMINAL_KINDS:
            self._terminal = event
        if kind != "text_delta":
            return ""
        delta = event.text_delta
        if self._partial and not self._parts:
            self._length = delta.offset
        if delta.offset != self._length:
            raise ScriptMismatchError(
                f"{event.generation}: delta {event.sequence} starts at offset {delta.offset},"
                f" the script so far has {self._length} characters",
                generation=event.generation,
                last_sequence=event.sequence - 1,
            )
        self._parts.append(delta.text)
        # Offsets count Unicode code points, which is what len() of a str counts.
        self._length += len(delta.text)
        return delta.text

    def result(self) -> GenerationResult:
        """What the job ended with; only valid once the terminal event was fed."""
        terminal = self._terminal
        if terminal is None:
            raise ValueError("the job has not ended yet")
        kind = terminal.WhichOneof("kind")
        outcome: Outcome
        episode: project_pb2.Episode | None = None
        error: RPCError | None = None
        cancel_reason = ""
        if kind == "completed":
            outcome = "completed"
            episode = terminal.completed.episode
        elif kind == "failed":
            outcome = "failed"
            error = RPCError.from_status(terminal.failed.status)
        else:
            outcome = "cancelled"
            cancel_reason = terminal.cancelled.reason
        return GenerationResult(
            generation=self._generation,
            script=self.script,
            outcome=outcome,
            episode=episode,
            error=error,
            cancel_reason=cancel_reason,
            terminal_event=terminal,
            event_count=self._event_count,
        )
