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
its send buffer to the system's limit (net.core.wmem_max: bursts then fit) and
reads the surplus bytes through a second reader on grpc's read end. It always
leaves one byte, so grpc's own reader still runs and handles every completion
queued: the poller queues a completion before it writes its byte, so a byte
read is a completion already queued, and no completion waits on a wake-up.
Call it in the running loop before the process's first grpc.aio server or
channel (`drained_grpc_wakeups()` is the same as a context manager); when
grpc.aio is already running, or the pair is not found (not Linux, another grpc
design), it returns None and changes nothing.
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
from collections.abc import Iterator
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
    duplicate = os.dup(fd)
    try:
        probe = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return False
    with probe:
        return probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM


def _nonblocking(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)


def pending_bytes(fd: int) -> int:
    """Bytes waiting to be read on `fd`."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count, True)
    return count[0]


class GrpcWakeupDrain:
    """Reads the surplus wake-up bytes of grpc.aio's socket pair; `close()` stops it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_end: int, write_end: int) -> None:
        self._loop = loop
        self._closed = False
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(write_end)) as writer:
            writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        # A reader of our own on a duplicate of grpc's read end (non-blocking already,
        # as grpc set it): grpc's reader keeps its fd.
        self._end: socket.socket | None = socket.socket(fileno=os.dup(read_end))
        try:
            loop.add_reader(self._end.fileno(), self._drain)
        except BaseException:
            self._end.close()
            raise

    def _drain(self) -> None:
        end = self._end
        assert end is not None  # the reader goes with the socket
        try:
            pending = pending_bytes(end.fileno())
            if pending > 1:
                end.recv(pending - 1)  # only what is there, and one byte stays for grpc
            elif pending == 0 and end.recv(1, socket.MSG_PEEK) == b"":
                self._stop()  # the pair was closed: stop before the end-of-file spins the loop
        except BlockingIOError:
            pass  # grpc's reader took the last byte earlier in this turn
        except OSError:
            self._stop()

    def _stop(self) -> None:
        end, self._end = self._end, None
        if end is not None:
            self._loop.remove_reader(end.fileno())
            end.close()

    def close(self) -> None:
        """Stop reading and give back the hold on grpc.aio taken when the pair was found."""
        if self._closed:
            return
        self._closed = True
        self._stop()
        aio.shutdown_grpc_aio()


def drain_grpc_wakeups() -> GrpcWakeupDrain | None:
    """Start grpc.aio in the running loop with its wake-ups drained (see the module doc).

    Holds grpc.aio running until `close()`, which the caller calls once its
    servers and channels are closed. None when the pair cannot be found.
    """
    loop = asyncio.get_running_loop()
    before = socket_fds()
    aio.init_grpc_aio()
    created = [fd for fd in socket_fds() - before if is_unix_stream(fd)]
    # grpc reads its end without blocking and writes the other blocking.
    read_ends = [fd for fd in created if _nonblocking(fd)]
    if len(created) != 2 or len(read_ends) != 1:
        aio.shutdown_grpc_aio()
        _log.debug("grpc.aio's wake-up socket pair not found; its wake-ups are not drained")
        return None
    (read_end,) = read_ends
    (write_end,) = (fd for fd in created if fd != read_end)
    try:
        return GrpcWakeupDrain(loop, read_end, write_end)
    except BaseException:
        aio.shutdown_grpc_aio()
        raise


@contextlib.contextmanager
def drained_grpc_wakeups() -> Iterator[GrpcWakeupDrain | None]:
    """`drain_grpc_wakeups()` for the block: the servers and channels opened in it close in it."""
    wakeups = drain_grpc_wakeups()
    try:
        yield wakeups
    finally:
        if wakeups is not None:
            wakeups.close()
