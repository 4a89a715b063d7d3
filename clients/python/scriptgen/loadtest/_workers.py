"""Run many streams in one process, in this process or in client worker processes.

One Python process cannot parse every event of thousands of fast streams, so
large runs split the streams over worker processes (`spawn` start method: no
gRPC or event-loop state crosses a fork). Every process waits for the common
start time, starts its streams on schedule, and cuts whatever is still open
at the common deadline or when a hold is released. `time.monotonic()` is the
same clock in every process of the machine, so their records line up.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

import grpc.aio

from scriptgen._grpc_wakeups import drained_grpc_wakeups
from scriptgen._heap import freeze_startup_heap
from scriptgen.cli._loop import default_event_loop, loop_factory
from scriptgen.loadtest._config import Protocol, Target
from scriptgen.loadtest._grpc import run_grpc_stream
from scriptgen.loadtest._lifetime import die_with_parent
from scriptgen.loadtest._records import Outcome, StreamPlan, StreamRecord, WorkerResult
from scriptgen.loadtest._sse import resolve, run_sse_stream
from scriptgen.v1 import generation_service_pb2_grpc

#: gRPC streams per channel (one HTTP/2 connection each).
STREAMS_PER_CHANNEL = 100


@dataclass(frozen=True, slots=True)
class Counters:
    """Counts shared by every process: streams with a first event, streams ended."""

    opened: Synchronized[int]
    ended: Synchronized[int]
    #: Set by the parent to end a hold: every open stream is closed.
    release: Event


@dataclass(frozen=True, slots=True)
class WorkerJob:
    target: Target
    plans: tuple[StreamPlan, ...]


def split_plans(plans: Sequence[StreamPlan], workers: int) -> list[tuple[StreamPlan, ...]]:
    """Deal the plans round-robin, so each worker's share is spread over the whole ramp."""
    return [tuple(plans[i :: max(1, workers)]) for i in range(max(1, workers))]


def _bump(counter: Synchronized[int]) -> Callable[[], None]:
    def bump() -> None:
        with counter.get_lock():
            counter.value += 1

    return bump


async def run_streams(
    job: WorkerJob, start_at: float, deadline: float, counters: Counters
) -> list[StreamRecord]:
    """Run `job`'s streams from `start_at` (monotonic) and cut them at `deadline`."""
    records = [StreamRecord(plan.index, plan.project) for plan in job.plans]
    timeouts: set[asyncio.Timeout] = set()
    opened = _bump(counters.opened)
    ended = _bump(counters.ended)

    async def one(
        plan: StreamPlan, record: StreamRecord, start: Callable[[StreamRecord], Awaitable[None]]
    ) -> None:
        await asyncio.sleep(max(0.0, start_at + plan.start_offset - time.monotonic()))
        try:
            async with asyncio.timeout_at(deadline) as timeout:
                timeouts.add(timeout)
                if counters.release.is_set():
                    timeout.reschedule(asyncio.get_running_loop().time())
                await start(record)
        except TimeoutError:
            record.outcome = Outcome.CUT
            record.error = ""
            record.ended = record.ended or time.monotonic()
        finally:
            ended()

    async def watch_release() -> None:
        # A cross-process Event has no awaitable side: poll it.
        while not counters.release.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        now = asyncio.get_running_loop().time()
        for timeout in list(timeouts):
            if not timeout.expired():
                timeout.reschedule(now)

    titles = {plan.index: f"Load {plan.index}" for plan in job.plans}
    watcher = asyncio.create_task(watch_release())
    try:
        if job.target.protocol is Protocol.SSE:
            try:
                gateway = await resolve(job.target.host, job.target.port)
            except OSError as error:
                # Every stream fails as its connection would: the worker still reports.
                now = time.monotonic()
                for record in records:
                    record.began = record.sent = record.ended = now
                    record.error = f"connection {type(error).__name__}"
                    ended()
                return records

            def sse(record: StreamRecord) -> Awaitable[None]:
                body = json.dumps({"title": titles[record.index]}).encode()
                return run_sse_stream(gateway, record, body, opened)

            await asyncio.gather(
                *(one(plan, rec, sse) for plan, rec in zip(job.plans, records, strict=True))
            )
        else:
            # Hundreds of streams in one client: its grpc.aio wake-ups, as the servers'.
            with drained_grpc_wakeups():
                channels = [
                    grpc.aio.insecure_channel(
                        job.target.grpc_target, options=[("grpc.loadtest_channel", number)]
                    )
                    for number in range(max(1, math.ceil(len(job.plans) / STREAMS_PER_CHANNEL)))
                ]
                stubs = [generation_service_pb2_grpc.GenerationServiceStub(c) for c in channels]
                try:

                    def rpc(record: StreamRecord) -> Awaitable[None]:
                        stub = stubs[record.index % len(stubs)]
                        return run_grpc_stream(stub, record, titles[record.index], opened)

                    await asyncio.gather(
                        *(one(plan, rec, rpc) for plan, rec in zip(job.plans, records, strict=True))
                    )
                finally:
                    for channel in channels:
                        await channel.close()
    finally:
        watcher.cancel()
    return records


def worker_main(
    connection: multiprocessing.connection.Connection,
    job: WorkerJob,
    counters: Counters,
    parent: int,
) -> None:
    """A client worker process of the tool `parent`: say ready, wait for the start, run,
    send a WorkerResult. It ends with the tool, however the tool ends."""
    die_with_parent(parent)
    # A terminal's Ctrl-C or hang-up reaches the whole process group: the tool, which ends
    # the workers itself (SIGTERM, as the parent-death signal does), says when.
    for ignored in (signal.SIGINT, signal.SIGHUP):
        signal.signal(ignored, signal.SIG_IGN)
    # The tool's own full collections would land in its streams' latencies, as the servers'.
    freeze_startup_heap()
    connection.send(os.getpid())
    start_at, deadline = connection.recv()
    # uvloop where installed, as the servers: the clients' own loop is part of what the box spends.
    with asyncio.Runner(loop_factory=loop_factory(default_event_loop())) as runner:
        records = runner.run(run_streams(job, start_at, deadline, counters))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    connection.send(
        WorkerResult(
            pid=os.getpid(),
            records=records,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            max_rss_bytes=usage.ru_maxrss * 1024,
        )
    )
    connection.close()


def new_counters() -> Counters:
    context = multiprocessing.get_context("spawn")
    return Counters(
        opened=context.Value("i", 0), ended=context.Value("i", 0), release=context.Event()
    )
