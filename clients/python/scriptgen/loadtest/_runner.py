"""One load run from start to report: servers, projects, streams, sampling, figures."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from scriptgen._client import Client
from scriptgen._errors import ScriptgenError
from scriptgen._heap import freeze_startup_heap, thaw_heap
from scriptgen.loadtest._config import LoadConfig, LoadTestError, Protocol, Target, check_bounds
from scriptgen.loadtest._discovery import (
    children_of,
    discover_servers,
    named_servers,
    servers_with_workers,
)
from scriptgen.loadtest._lifetime import uninterrupted
from scriptgen.loadtest._processes import ProcessSampler, WatchedProcess, describe
from scriptgen.loadtest._records import StreamPlan, StreamRecord, WorkerResult
from scriptgen.loadtest._report import HoldWindow, LoadReport, build_report, time_speed_loop
from scriptgen.loadtest._spawn import spawned_servers
from scriptgen.loadtest._workers import (
    Counters,
    WorkerJob,
    new_counters,
    run_streams,
    split_plans,
    worker_main,
)

Progress = Callable[[str], None]

#: Time after the common start for streams to close once cut, and for workers to report.
_WRAP_UP_SECONDS = 60.0
#: How long the client workers may take to exit once a run is over or stopped.
_WORKER_EXIT_SECONDS = 5.0


def _quiet(_: str) -> None:
    pass


async def run_load(config: LoadConfig, progress: Progress = _quiet) -> LoadReport:
    """Run `config` and return its report. Raises LoadTestError when the run cannot be set up."""
    check_bounds(config)
    started_utc = datetime.now(UTC).isoformat(timespec="seconds")
    async with AsyncExitStack() as stack:
        if config.spawn:
            progress("starting the servers")
            servers = await stack.enter_async_context(
                spawned_servers(
                    config.protocol,
                    config.pace,
                    config.setup_timeout_seconds,
                    server_args=config.server_args,
                    gateway_args=config.gateway_args,
                    provider=config.provider,
                    reply_tokens=config.reply_tokens,
                )
            )
            target = servers.target
            found = list(servers.processes)
        else:
            assert config.target is not None
            target = config.target
            found = discover_servers(target.host, target.port)
            known = {pid for pid, _ in found}
            found += [c for c in children_of(servers_with_workers(found)) if c[0] not in known]
        found += named_servers(config.server_pids, known=(pid for pid, _ in found))
        processes = [describe(pid, role) for pid, role in found]
        # Workers these start during the run are measured too (one restarted, say).
        parents = list(
            dict.fromkeys(
                servers_with_workers(found)
                + [(pid, role) for pid, role in found if pid in config.server_pids]
            )
        )
        progress(f"creating {config.projects} project(s) on {target}")
        try:
            async with asyncio.timeout(config.setup_timeout_seconds):
                projects = await _create_projects(target, config.projects)
        except TimeoutError:
            raise LoadTestError(
                f"creating {config.projects} project(s) on {target} took longer than"
                f" --setup-timeout {config.setup_timeout_seconds:g} s"
            ) from None
        plans = _plans(config, projects)
        progress("reading the machine's speed")
        speed = time_speed_loop()  # the servers are idle now; this loop has the tool's CPU
        sampler = ProcessSampler(processes, config.sample_interval_seconds, parents)
        sampler.start()
        stack.callback(sampler.stop)
        counters = new_counters()
        if config.workers == 0:
            start, records, workers, hold = await _run_here(
                config, target, plans, counters, sampler, progress
            )
        else:
            start, records, workers, hold = await _run_in_workers(
                config, target, plans, counters, sampler, progress
            )
        sampler.stop()
    return build_report(
        replace(config, target=target),
        target,
        started_utc,
        projects,
        start,
        records,
        processes,
        workers,
        hold,
        sampler.machine,
        speed,
    )


def _plans(config: LoadConfig, projects: Sequence[str]) -> list[StreamPlan]:
    step = config.ramp_seconds / config.streams
    return [
        StreamPlan(index, projects[index % len(projects)], index * step)
        for index in range(config.streams)
    ]


async def _create_projects(target: Target, count: int) -> list[str]:
    titles = [f"Load test {number + 1}" for number in range(count)]
    limit = asyncio.Semaphore(16)
    if target.protocol is Protocol.SSE:
        async with aiohttp.ClientSession() as session:

            async def create_http(title: str) -> str:
                async with (
                    limit,
                    session.post(
                        f"{target.base_url}/v1/projects", json={"title": title, "language": "en"}
                    ) as response,
                ):
                    if response.status not in (200, 201):
                        text = await response.text()
                        raise LoadTestError(
                            f"creating a project answered {response.status}: {text}"
                        )
                    document: dict[str, Any] = await response.json()
                    return str(document["name"])

            try:
                return list(await asyncio.gather(*(create_http(t) for t in titles)))
            except aiohttp.ClientError as error:
                raise LoadTestError(f"cannot reach {target}: {error}") from error

    async with Client(target.grpc_target) as client:

        async def create_grpc(title: str) -> str:
            async with limit:
                return (await client.create_project(title=title, language="en")).name

        try:
            return list(await asyncio.gather(*(create_grpc(t) for t in titles)))
        except ScriptgenError as error:
            raise LoadTestError(f"cannot create projects on {target}: {error}") from error


async def _control(
    config: LoadConfig, counters: Counters, start: float, deadline: float, progress: Progress
) -> HoldWindow | None:
    """Report progress; in hold mode, hold once every stream is open, then release them."""
    hold: HoldWindow | None = None
    last_note = 0.0
    while time.monotonic() < deadline:
        opened, ended = counters.opened.value, counters.ended.value
        now = time.monotonic()
        if now - last_note >= 5:
            progress(f"{now - start:6.1f} s: {opened} streams had a first event, {ended} ended")
            last_note = now
        if ended >= config.streams:
            break
        if config.hold_seconds is not None and hold is None:
            ramped = now >= start + config.ramp_seconds
            if ramped and (
                opened + ended >= config.streams or now >= deadline - config.hold_seconds
            ):
                hold_end = min(deadline, now + config.hold_seconds)
                progress(f"holding {opened - ended} open streams for {hold_end - now:.1f} s")
                await asyncio.sleep(hold_end - now)
                hold = HoldWindow(now, time.monotonic(), opened - ended)
                counters.release.set()
                continue
        await asyncio.sleep(0.1)
    return hold


async def _run_here(
    config: LoadConfig,
    target: Target,
    plans: list[StreamPlan],
    counters: Counters,
    sampler: ProcessSampler,
    progress: Progress,
) -> tuple[float, list[StreamRecord], list[WorkerResult], HoldWindow | None]:
    sampler.sample()
    # Before the start is fixed: the collection takes a while in a big process.
    freeze_startup_heap()  # the tool's own full collections would land in its latencies
    try:
        start = time.monotonic() + 0.05
        deadline = start + config.duration_seconds
        job = WorkerJob(target, tuple(plans))
        async with asyncio.timeout_at(deadline + _WRAP_UP_SECONDS):
            records, hold = await asyncio.gather(
                run_streams(job, start, deadline, counters),
                _control(config, counters, start, deadline, progress),
            )
    finally:
        thaw_heap()
    return start, records, [], hold


async def _run_in_workers(
    config: LoadConfig,
    target: Target,
    plans: list[StreamPlan],
    counters: Counters,
    sampler: ProcessSampler,
    progress: Progress,
) -> tuple[float, list[StreamRecord], list[WorkerResult], HoldWindow | None]:
    context = multiprocessing.get_context("spawn")
    links: list[multiprocessing.connection.Connection] = []
    children: list[Any] = []
    finished = False
    try:
        for share in split_plans(plans, config.workers):
            parent_end, child_end = context.Pipe()
            child = context.Process(
                target=worker_main,
                args=(child_end, WorkerJob(target, share), counters, os.getpid()),
                name="scriptgen-loadtest-worker",
                daemon=True,
            )
            child.start()
            child_end.close()
            links.append(parent_end)
            children.append(child)
        progress(f"started {len(children)} client worker processes")
        async with asyncio.timeout(config.setup_timeout_seconds):
            for link in links:
                pid = await _receive(link)
                sampler.watch(WatchedProcess(int(pid), "client"))
        sampler.sample()
        start = time.monotonic() + 0.1
        deadline = start + config.duration_seconds
        for link in links:
            link.send((start, deadline))
        async with asyncio.timeout_at(deadline + _WRAP_UP_SECONDS):
            hold = await _control(config, counters, start, deadline, progress)
            results: list[WorkerResult] = [await _receive(link) for link in links]
        finished = True
    finally:
        for link in links:
            link.close()
        await uninterrupted(_end_workers(children, finished=finished))
    records = sorted((r for result in results for r in result.records), key=lambda r: r.index)
    return start, records, results, hold


async def _end_workers(children: list[Any], *, finished: bool) -> None:
    """Wait for the client workers to exit, together, _WORKER_EXIT_SECONDS at most: after a
    run (`finished`: each sent its result) on their own; when it failed or was stopped,
    told at once (SIGTERM). Any still running then is killed."""
    if not finished:
        for child in children:
            if child.is_alive():
                child.terminate()
    deadline = time.monotonic() + _WORKER_EXIT_SECONDS
    for child in children:
        await asyncio.to_thread(child.join, max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.is_alive():
            child.kill()
            await asyncio.to_thread(child.join, 1)


async def _receive(link: multiprocessing.connection.Connection) -> Any:
    """The next message from a worker, without blocking the event loop."""
    if not link.poll():
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(link.fileno(), readable.set)
        try:
            await readable.wait()
        finally:
            loop.remove_reader(link.fileno())
            # uvloop leaves a watched descriptor non-blocking; recv() reads a whole message.
            os.set_blocking(link.fileno(), True)
    try:
        return link.recv()
    except EOFError:
        raise LoadTestError("a client worker process died; see its output above") from None
