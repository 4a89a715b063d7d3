"""How often each end of a Relay call writes: the cadence the gateway and the core share.

A grpc.aio message costs both its ends CPU whatever it holds (~25-90 µs, by
machine: `scripts/relay_write_costs.py`), and in a burst of stream starts each
turn of the loop makes an open or a frame or two. So each end writes a Relay
call at most once per `WRITE_INTERVAL_SECONDS`: what is made meanwhile joins
the next message. The first message after a quieter spell goes at once, and so
does the rest of one that its byte budget cut short, so a backlog drains as
fast as it can be sent.
"""

from __future__ import annotations

import asyncio
from typing import Final

#: Least time from the start of one message on a Relay call to the next, either way.
WRITE_INTERVAL_SECONDS: Final = 0.005


class WriteCadence:
    """When one end's next message on a Relay call may go."""

    __slots__ = ("_loop", "_next")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._next = 0.0

    def wait_seconds(self) -> float:
        """How long the next message waits; zero or less: it goes now."""
        return self._next - self._loop.time()

    def wrote(self, *, cut_short: bool) -> None:
        """A message goes now; `cut_short`: its budget left some of what was waiting."""
        self._next = 0.0 if cut_short else self._loop.time() + WRITE_INTERVAL_SECONDS
