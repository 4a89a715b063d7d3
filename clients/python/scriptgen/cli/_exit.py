"""A server process's exit, bounded.

Once a server command has stopped its servers (each wait of that bounded, see the core's
`AFTER_GRACE_SECONDS`), the interpreter still waits for every thread that is not a daemon:
asyncio's default executor, or a pool's worker still running a call on a dead server (a
Chroma call, until its own timeout). After EXIT_WAIT_SECONDS the process exits anyway,
with the status it was going to have, and says on stderr which threads it left.
"""

from __future__ import annotations

import os
import sys
import threading

#: How long a server process's exit may wait for its threads once its servers have stopped.
EXIT_WAIT_SECONDS = 10.0
#: The name of the thread that ends the process once the wait is over.
EXIT_TIMER_NAME = "scriptgen exit wait"


def bound_exit(status: int, wait_seconds: float | None = None) -> threading.Timer:
    """From now on, exit with `status` after `wait_seconds` (EXIT_WAIT_SECONDS) if the
    process is still there; the timer is a daemon thread, so a prompt exit is not held up."""
    if wait_seconds is None:
        wait_seconds = EXIT_WAIT_SECONDS

    def leave() -> None:
        held = sorted(
            thread.name
            for thread in threading.enumerate()
            if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
        )
        sys.stderr.write(
            f"scriptgen: stopped, but {len(held)} threads still ran {wait_seconds:g}s later"
            f" ({', '.join(held) or 'the main thread waiting'}); exiting without them\n"
        )
        sys.stderr.flush()
        os._exit(status)

    timer = threading.Timer(wait_seconds, leave)
    timer.name = EXIT_TIMER_NAME
    timer.daemon = True
    timer.start()
    return timer
