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
import os
import signal
import sys
from collections.abc import Sequence
from types import TracebackType

#: The signals that ask a server command to stop.
SERVER_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def is_own_command(name: str) -> bool:
    """Whether this process is the `scriptgen <name>` command, not a caller of it in its own
    process (a test, an embedding), whose signal handlers must be left as they were."""
    return name in sys.argv[1:2] and os.path.basename(sys.argv[0]) in {
        "scriptgen",
        "__main__.py",
    }


def give_way(
    loop: asyncio.AbstractEventLoop, installed: Sequence[signal.Signals], *, ignore: bool
) -> None:
    """Remove the loop's handlers of `installed`; with `ignore` (a stop is under way), leave
    those signals ignored, held back meanwhile so that none meets its default action (the
    process's death, or KeyboardInterrupt) in between: the exit after a stop still waits
    for threads (`scriptgen.cli._exit`), and a repeat must not cut that short either."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, installed) if ignore else None
    try:
        for signum in installed:
            if not loop.is_closed():
                loop.remove_signal_handler(signum)
            if ignore:
                signal.signal(signum, signal.SIG_IGN)
    finally:
        if held is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


class StopSignals:
    """`await wait()` returns at the first stop signal; the handlers stay until `close()`.

    The handlers go in at `arm()` or the first `wait()`, and stay while the command stops
    its servers, taking any repeat. A command whose start can hang (the core's, waiting for
    its stores) arms them after it, so a signal during start-up still ends it at once; a
    gateway, whose start cannot, arms them before, so a signal that comes while it starts
    ends it cleanly once it has.
    """

    def __init__(self, *, own_process: bool = False) -> None:
        #: The process's own command: once a stop came, its signals stay ignored to the exit.
        self._own_process = own_process
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
        """Give the signals back: to their default handlers, or, in the process's own
        command once a stop came, to SIG_IGN until the process exits."""
        if self._loop is not None:
            give_way(self._loop, self._installed, ignore=self._own_process and self.requested)
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
