"""The client workers' results reach the parent whole, on the loop the load tool runs on."""

from __future__ import annotations

import multiprocessing
import threading
import time

import uvloop
from scriptgen.loadtest._runner import _receive


def test_a_result_larger_than_a_pipe_buffer_arrives_whole_on_uvloop() -> None:
    # uvloop leaves a descriptor it watched non-blocking: a result that does not fit the
    # pipe's buffer must still be read whole (a 1000-stream run's records are megabytes).
    receiving, sending = multiprocessing.Pipe(duplex=False)
    result = list(range(300_000))

    def send_later() -> None:
        time.sleep(0.1)  # the parent is already waiting for it
        sending.send(result)

    sender = threading.Thread(target=send_later)
    sender.start()
    try:
        assert uvloop.run(_receive(receiving)) == result
    finally:
        sender.join()
        receiving.close()
        sending.close()
