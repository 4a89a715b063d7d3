"""SIGINT and SIGTERM as one request to stop a server command; repeats do not cut it short.

A second signal while a server drains is usual, not a user's second thought: Ctrl-C in a
terminal reaches `gateway --workers`' supervisor and its workers alike, and the supervisor
passes it on as SIGTERM; systemd signals every process of a unit. Were a repeat obeyed (the
default handlers back in place), a worker would die mid-drain and its clients' streams end
without their last events. Every wait of a stop is bounded (the drain, then the exit's
`EXIT_WAIT_SECONDS`), so nothing needs a second signal to end it; SIGKILL still does.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from types import TracebackType

#: The signals that ask a server command to stop.
SERVER_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """`await wait()` returns at the first stop signal; the handlers stay until `close()`.

    The handlers go in at `arm()` or the first `wait()`, and stay while the command stops
    its servers, taking any repeat. A command whose start can hang (the core's, waiting for
    its stores) arms them after it, so a signal during start-up still ends it at once; a
    gateway, whose start cannot, arms them before, so a signal that comes while it starts
    ends it cleanly once it has.
    """

    def __init__(self) -> None:
        self._requested = asyncio.Event()
        self._installed: list[signal.Signals] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self._requested.is_set()

    async def wait(self) -> None:
        """Return once SIGINT or SIGTERM arrives (or never, where signals cannot be taken:
        then the caller's cancellation ends the wait)."""
        self.arm()
        await self._requested.wait()

    def arm(self) -> None:
        """Take SIGINT and SIGTERM from now on (once; the running loop's handlers)."""
        if self._loop is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        for signum in SERVER_STOP_SIGNALS:
            try:
                loop.add_signal_handler(signum, self._received, signum)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or no signals here
            self._installed.append(signum)

    def _received(self, signum: signal.Signals) -> None:
        if not self._requested.is_set():
            self._requested.set()
            return
        sys.stderr.write(
            f"scriptgen: {signal.Signals(signum).name} while stopping: the stop goes on"
            " (it is bounded; SIGKILL ends it at once)\n"
        )
        sys.stderr.flush()

    def close(self) -> None:
        """Give the signals back to their default handlers."""
        if self._loop is not None and not self._loop.is_closed():
            for signum in self._installed:
                self._loop.remove_signal_handler(signum)
        self._installed.clear()

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
