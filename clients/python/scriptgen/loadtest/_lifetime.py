"""Processes the load tool starts end with it, even when it is killed outright.

`parent_death_signal()` is a `preexec_fn` for the servers, stand-ins and load runs the
tool and `make bench` start: on Linux the kernel sends the child SIGTERM when the
thread that started it ends (`PR_SET_PDEATHSIG`, prctl(2)), however that happens
(SIGKILL, the OOM killer), and each of them stops on SIGTERM. Elsewhere it is None.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

#: prctl(2)'s option that sets the signal a process gets when its parent thread ends.
_PR_SET_PDEATHSIG = 1


def parent_death_signal() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent SIGTERM when this thread ends; None where
    the kernel has no such signal (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child
    parent = os.getpid()

    def stop_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)  # the tool died between the fork and the prctl: no signal will come

    return stop_with_parent
