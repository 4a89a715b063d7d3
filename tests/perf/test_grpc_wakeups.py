"""grpc.aio's wake-up socket pair is drained, so completions are not throttled to one per turn.

The flood runs in processes of their own (`tests/perf/grpc_flood.py`): grpc.aio
must start there under `drain_grpc_wakeups()`, which an earlier test in this
process would have done already.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from grpc import aio
from scriptgen._grpc_wakeups import drain_grpc_wakeups, pending_bytes

from tests.perf.grpc_flood import MESSAGES, STREAMS
from tests.sharing import MACHINE

pytestmark = MACHINE


def _flood(*flags: str) -> dict[str, int | float]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.perf.grpc_flood", *flags],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    result: dict[str, int | float] = json.loads(done.stdout)
    return result


def _full_pair() -> int:
    """How many one-byte writes fill a fresh Unix socket pair (each counts at its full size)."""
    reader, writer = socket.socketpair()
    with reader, writer:
        writer.setblocking(False)
        written = 0
        try:
            while True:
                writer.send(b"1")
                written += 1
        except BlockingIOError:
            return written


def test_the_wake_up_pair_fills_without_the_drain_and_stays_short_with_it() -> None:
    full = _full_pair()
    plain = _flood()
    # The reason for the drain: grpc.aio's poller then blocks, one completion per turn.
    # Should a grpc release stop this, the drain can go (scriptgen/_grpc_wakeups.py).
    assert plain["peak_pending"] == full, plain
    for loop in ((), ("--uvloop",)):
        drained = _flood("--drain", *loop)
        assert drained["received"] == STREAMS * MESSAGES  # no completion left without a wake-up
        assert drained["peak_pending"] < full // 2, (loop, drained)


async def test_nothing_is_drained_when_grpc_aio_already_runs() -> None:
    channel = aio.insecure_channel("127.0.0.1:1")  # grpc.aio runs from here on
    try:
        assert drain_grpc_wakeups() is None
    finally:
        await channel.close()


def test_pending_counts_the_bytes_waiting() -> None:
    reader, writer = socket.socketpair()
    with reader, writer:
        assert pending_bytes(reader.fileno()) == 0
        writer.send(b"123")
        assert pending_bytes(reader.fileno()) == 3
