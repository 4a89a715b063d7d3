"""The events this process appended to a shared log, kept for the followers in this process.

A core on Redis writes every event of its jobs to Redis (XADD), and most of the
followers of a job are on the same core: the GenerateScript call that started
it, a StreamGenerationEvents resumed through the same gateway. Reading each
event back from Redis (one blocking XREAD per event and follower) cost as much
CPU as writing it, ~0.2 ms of redis-py per command. So the log also keeps, per
job it created, the events it appended, in order from sequence 1, and a follower
in this process reads those.

Redis stays the truth. An event goes into the tail only after Redis took it, so
a local follower never sees what another core could not replay. The tail ends
with the terminal event, or when this process can no longer vouch that it holds
every event of the log: an append that Redis refused (another core wrote to the
log: it ended the job of a core it believed gone) or a follower that found Redis
further on than the tail. Followers of an abandoned tail carry on from Redis at
the sequence they reached.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(slots=True)
class Tail:
    """One job's events appended here, serialized, from sequence 1 without a gap."""

    events: list[bytes] = field(default_factory=list)
    #: Replaced on every change: followers wait on the current one once they caught up.
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The terminal event is the last of `events`.
    ended: bool = False
    #: This process no longer holds every event: followers go on from the shared log.
    abandoned: bool = False

    def wake(self) -> None:
        """Wake the followers waiting for a change."""
        waiting, self.changed = self.changed, asyncio.Event()
        waiting.set()


class Tails:
    """The tails of the logs this process writes, by generation name."""

    def __init__(self) -> None:
        self._tails: dict[str, Tail] = {}

    def __len__(self) -> int:
        return len(self._tails)

    def get(self, generation: str) -> Tail | None:
        """The tail of `generation` while this process holds every event of its log."""
        return self._tails.get(generation)

    def start(self, generation: str) -> None:
        """A new, empty log was created by this process."""
        self._tails.setdefault(generation, Tail())

    def appended(self, generation: str, sequence: int, event: bytes, terminal: bool) -> None:
        """The shared log took `event` (its `sequence`); a gap abandons the tail."""
        tail = self._tails.get(generation)
        if tail is None:
            return
        if sequence <= len(tail.events):
            return  # an append retried after a lost reply: the tail has it already
        if sequence != len(tail.events) + 1:
            self.abandon(generation)
            return
        tail.events.append(event)
        if terminal:
            tail.ended = True
            # Followers reading it keep their own reference; new ones read the shared log.
            del self._tails[generation]
        tail.wake()

    def abandon(self, generation: str) -> None:
        """This process cannot vouch for `generation`'s log any more."""
        tail = self._tails.pop(generation, None)
        if tail is not None:
            tail.abandoned = True
            tail.wake()
