"""Keeps grpc.aio's completion wake-ups from throttling a busy process to one per loop turn.

grpc.aio (grpcio 1.85) hands the completions of C-core to the event loop
through a Unix socket pair: its poller thread queues each completion and
writes one byte; the loop's reader on the other end reads one byte and handles
every completion queued. When completions come faster than the loop turns (a
core streaming to hundreds of readers), the unread bytes pile up, and a Unix
socket's send buffer counts each one-byte write at its full size: after ~278
of them (212,992 bytes of buffer) the poller thread blocks in write(). From
then on the process takes one completion per loop turn, in arrival order, so a
new call waits behind thousands of send completions: at the end of a
1000-stream ramp the core took ~8 new calls a second while 33 came
(BENCHMARKS.md, session 10).

`drain_grpc_wakeups()` finds that socket pair as grpc.aio creates it, raises
its send buffer to the system's limit (bursts then fit) and reads the surplus
bytes from a second reader on the same socket. It always leaves one byte, so
grpc's own reader still runs and handles every completion queued: the bytes
only wake the loop, and no completion waits on one. Call it in the running
loop before the process's first grpc.aio server or channel; when grpc.aio is
already running, or the pair is not found (not Linux, another grpc design), it
returns None and changes nothing.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import stat
import termios
from pathlib import Path

from grpc import aio

_log = logging.getLogger(__name__)

#: The send buffer asked for; the kernel caps it at net.core.wmem_max.
SEND_BUFFER_BYTES = 4 * 1024 * 1024
_FD_DIR = Path("/proc/self/fd")


def socket_fds() -> set[int]:
    found: set[int] = set()
    try:
        names = os.listdir(_FD_DIR)
    except OSError:
        return found
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            fd = int(name)
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                found.add(fd)
    return found


def is_unix_stream(fd: int) -> bool:
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with probe:
        return probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM


def pending_bytes(fd: int) -> int:
    """Bytes waiting to be read on `fd`."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count, True)
    return count[0]


class GrpcWakeupDrain:
    """Reads the surplus wake-up bytes of grpc.aio's socket pair; `close()` stops it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pair: tuple[int, int]) -> None:
        self._loop = loop
        #: Bytes read off the surplus so far (each was a completion's wake-up).
        self.drained = 0
        self._readers: dict[int, socket.socket] = {}
        for fd in pair:
            # A reader of our own on a duplicate: grpc's reader keeps its fd and its
            # blocking mode. Which end grpc reads is its business; the other costs nothing.
            end = socket.socket(fileno=os.dup(fd))
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            self._readers[end.fileno()] = end
            loop.add_reader(end.fileno(), self._drain, end)

    def _drain(self, end: socket.socket) -> None:
        try:
            pending = pending_bytes(end.fileno())
            if pending > 1:
                # Only what is there: the read cannot block, and one byte stays for grpc.
                self.drained += len(end.recv(pending - 1))
            elif pending == 0 and end.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                self._stop(end)  # grpc closed the pair
        except BlockingIOError:
            pass  # grpc's reader took the last byte in the same turn
        except OSError:
            self._stop(end)

    def _stop(self, end: socket.socket) -> None:
        if self._readers.pop(end.fileno(), None) is not None:
            self._loop.remove_reader(end.fileno())
            end.close()

    def close(self) -> None:
        """Stop reading and give back the hold on grpc.aio taken when the pair was found."""
        for end in list(self._readers.values()):
            self._stop(end)
        aio.shutdown_grpc_aio()


def drain_grpc_wakeups() -> GrpcWakeupDrain | None:
    """Start grpc.aio in the running loop with its wake-ups drained (see the module doc).

    Holds grpc.aio running until `close()`, which the caller calls once its
    servers and channels are closed. None when the pair cannot be found.
    """
    loop = asyncio.get_running_loop()
    before = socket_fds()
    aio.init_grpc_aio()
    created = sorted(fd for fd in socket_fds() - before if is_unix_stream(fd))
    if len(created) != 2:
        aio.shutdown_grpc_aio()
        _log.debug("grpc.aio's wake-up socket pair not found; its wake-ups are not drained")
        return None
    return GrpcWakeupDrain(loop, (created[0], created[1]))
