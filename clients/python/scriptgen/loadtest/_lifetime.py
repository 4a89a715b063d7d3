"""Processes the load tool starts end with it, even when it is killed outright.

* `parent_death_signal()` is a `preexec_fn` for the servers, stand-ins and load runs
  the tool and `make bench` start, and `die_with_parent(pid)` the same called in a
  child of its own (a client worker process, which multiprocessing starts): on Linux
  the kernel sends the child SIGTERM when the thread that started it ends
  (`PR_SET_PDEATHSIG`, prctl(2)), however that happens (SIGKILL, the OOM killer), and
  each of them stops on SIGTERM. Where the kernel has no such signal, or refuses it
  (a sandbox), nothing is set.
* `uninterrupted(work)` runs the stopping of those processes to its end even when the
  tool is cancelled meanwhile (a second signal): a stop cut short left servers running.
* `interrupt_on_sigterm()` makes SIGTERM end a measuring script as Ctrl-C does, through
  its `finally` and `with` blocks (its temporary folders, its servers), not at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: prctl(2)'s options that set and read the signal a process gets when its parent thread ends.
_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2


def _find_prctl() -> Any:
    """libc's prctl when this kernel lets this process use the parent-death signal, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    current = ctypes.c_int(0)
    if prctl(_PR_GET_PDEATHSIG, ctypes.addressof(current), 0, 0, 0) != 0:
        return None  # refused (seccomp): the processes then end only when stopped
    return prctl


#: Looked up once, in the parent: a child between fork and exec only calls it.
_PRCTL = _find_prctl()


def die_with_parent(parent: int) -> None:
    """In a child of `parent`: SIGTERM when the thread that started it ends; exits at once
    if `parent` is gone already (it died before the signal was set, so none would come)."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def parent_death_signal(*, own_group: bool = False) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent SIGTERM when this thread ends; None where
    that cannot be set and nothing else is asked.

    With `own_group` the child also leads a process group of its own, so a terminal's
    Ctrl-C (sent to the foreground group) reaches the parent alone, which stops the child
    when it chooses. A group, not a session: with the kernel's autogroup scheduling (on
    here) a session of its own would also give the child a CPU share of its own, and
    change how the box's CPUs are shared out in the runs it measures."""
    if _PRCTL is None and not own_group:
        return None
    return functools.partial(_start_child, os.getpid(), own_group)


def _start_child(parent: int, own_group: bool) -> None:
    if own_group:
        os.setpgid(0, 0)
    die_with_parent(parent)


def interrupt_on_sigterm() -> None:
    """From now on SIGTERM is taken as Ctrl-C: SIGINT is raised in its place, so whatever
    handles SIGINT (an asyncio Runner cancels its main task; otherwise KeyboardInterrupt)
    handles it."""
    signal.signal(signal.SIGTERM, _as_interrupt)


def _as_interrupt(signum: int, frame: object) -> None:
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        # SIGINT would be lost (started ignoring it: `cmd &` in a shell script) or would
        # kill the process before its `finally` blocks: the interrupt is raised here.
        raise KeyboardInterrupt
    signal.raise_signal(signal.SIGINT)


async def uninterrupted(work: Awaitable[T]) -> T:
    """`work`'s result, awaited to its end even if this task is cancelled meanwhile; the
    cancellation (any that came while waiting, even in the turn `work` ended) is raised
    once `work` is done."""
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    task = asyncio.ensure_future(work)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    if current is not None and current.cancelling() > before:
        if not task.cancelled() and task.exception() is not None:
            raise asyncio.CancelledError() from task.exception()
        raise asyncio.CancelledError()
    return task.result()
