"""Item 7: storage faults — the database locked, its disk full, Chroma gone — with real processes.

A real `scriptgen server` and `scriptgen gateway` run; the fault is real: another
process holds SQLite's write lock past the busy timeout; the data folder is a
small tmpfs filled to the last byte (ENOSPC); the `chroma run` server is killed.
For each: the caller gets UNAVAILABLE with a reason and RetryInfo through gRPC,
503 with `Retry-After` through the gateway (never INTERNAL / 500); gRPC health
and the gateway's /readyz turn NOT_SERVING within READINESS_SECONDS; a stream
running into the fault ends with exactly one terminal event and leaves no
half-saved episode; and once the fault clears readiness is SERVING again and a
new generation completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2
from scriptgen.v1 import generation_pb2, knowledge_pb2, project_pb2
from scriptgen.v1 import generation_service_pb2 as gs
from scriptgen.v1 import project_service_pb2 as ps

from server.auth.records import DEFAULT_TENANT
from server.errors import NotFound, Unavailable
from server.store.sqlite import BUSY_TIMEOUT_SECONDS, SqliteProjectStore
from tests.backends.chroma import ChromaServer
from tests.replicas.cluster import CORE_LINE, GATEWAY_LINE, Process, spawn, wait_ready
from tests.server.rpc import Stubs, connect, error_info, health_check, rich_status, script_of

#: Documented bound (README, RELIABILITY.md): probe every 2 s, each given 4 s.
READINESS_SECONDS = 8.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class Servers:
    core: Process
    gateway: Process
    data_dir: Path

    @property
    def base(self) -> str:
        return self.gateway.address


@contextlib.asynccontextmanager
async def _servers(data_dir: Path, *core_flags: str) -> AsyncIterator[Servers]:
    core = await spawn(
        "server",
        "--grpc-address=127.0.0.1:0",
        "--metrics-address=off",
        "--auth=disabled",
        f"--data-dir={data_dir}",
        "--synthetic-first-token-seconds=0.05",
        "--delta-window-ms=0",
        "--heartbeat-seconds=1",
        "--shutdown-grace-seconds=0.5",
        "--knowledge-timeout-seconds=3",
        *core_flags,
        pattern=CORE_LINE,
    )
    try:
        gateway = await spawn(
            "gateway",
            f"--core-target={core.address}",
            "--http-address=127.0.0.1:0",
            "--drain-seconds=0.5",
            pattern=GATEWAY_LINE,
        )
        try:
            await wait_ready(gateway.address)
            yield Servers(core, gateway, data_dir)
        except BaseException:
            print("".join(core.output[-30:]), "".join(gateway.output[-30:]), sep="\n")
            raise
        finally:
            await gateway.stop()
    finally:
        await core.stop()


async def _serving(rpc: Stubs) -> int:
    try:
        response = await health_check(rpc.channel)(health_pb2.HealthCheckRequest(), timeout=2)
    except aio.AioRpcError:
        return NOT_SERVING
    return int(response.status)


async def _readiness_becomes(rpc: Stubs, http: httpx.AsyncClient, base: str, status: int) -> float:
    """Seconds until both gRPC health and /readyz say `status`; fails after READINESS_SECONDS."""
    started = time.monotonic()
    want_http = 200 if status == SERVING else 503
    async with asyncio.timeout(READINESS_SECONDS):
        while True:
            ready = (await http.get(f"{base}readyz")).status_code
            if await _serving(rpc) == status and ready == want_http:
                return time.monotonic() - started
            await asyncio.sleep(0.2)


async def _generate(rpc: Stubs, parent: str, title: str) -> list[generation_pb2.GenerationEvent]:
    request = gs.GenerateScriptRequest(parent=parent, title=title)
    async with asyncio.timeout(60):
        return [r.event async for r in rpc.generations.GenerateScript(request)]


def _check_one_end(events: list[generation_pb2.GenerationEvent]) -> str:
    """Sequences 1..n, exactly one terminal event, last; its kind."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    kinds = [e.WhichOneof("kind") for e in events]
    assert sum(kind in TERMINAL for kind in kinds) == 1, kinds
    assert kinds[-1] in TERMINAL
    return str(kinds[-1])


def _check_retryable(error: aio.AioRpcError, reason: str) -> None:
    assert error.code() is grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    assert error_info(error).reason == reason
    assert error.details()
    assert any(d.type_url.endswith("google.rpc.RetryInfo") for d in rich_status(error).details)


def _check_failed_retryable(event: generation_pb2.GenerationEvent, reason: str) -> None:
    status = event.failed.status
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0], status
    assert status.message
    assert any(d.type_url.endswith("google.rpc.RetryInfo") for d in status.details)
    assert reason.encode() in b"".join(d.value for d in status.details)


def _check_503(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["status"] == "UNAVAILABLE"
    assert error["message"]
    assert reason in json.dumps(error["details"])


async def _episodes(rpc: Stubs, parent: str) -> list[project_pb2.Episode]:
    response = await rpc.projects.ListEpisodes(ps.ListEpisodesRequest(parent=parent, page_size=100))
    return list(response.episodes)


async def _check_saved(
    rpc: Stubs, parent: str, runs: list[list[generation_pb2.GenerationEvent]]
) -> None:
    """The project holds exactly the Completed episodes, each whole: none half-saved."""
    completed = [run for run in runs if run[-1].HasField("completed")]
    episodes = await _episodes(rpc, parent)
    assert sorted(e.generation for e in episodes) == sorted(r[-1].generation for r in completed)
    for run in completed:
        saved = await rpc.projects.GetEpisode(
            ps.GetEpisodeRequest(name=run[-1].completed.episode.name)
        )
        assert saved.episode.script == script_of(run)


@contextlib.contextmanager
def _write_lock(database: Path) -> Iterator[None]:
    """Another process takes SQLite's write lock (BEGIN IMMEDIATE) and holds it until exit."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], timeout=10)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(database),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"locked"
        yield
    finally:
        holder.kill()
        holder.communicate(timeout=10)  # also closes the pipes


async def test_a_locked_database(tmp_path: Path) -> None:
    async with (
        _servers(tmp_path / "core", "--synthetic-tokens-per-second=200") as servers,
        connect(servers.core.address) as rpc,
        httpx.AsyncClient(timeout=30) as http,
    ):
        parent = (await rpc.create_project("Locked")).name
        before = await _generate(rpc, parent, "Before")
        assert _check_one_end(before) == "completed"
        running = asyncio.create_task(_generate(rpc, parent, "Into the lock"))
        await asyncio.sleep(0.3)  # writing, not yet saving
        with _write_lock(servers.data_dir / "scriptgen.sqlite3"):
            down = await _readiness_becomes(rpc, http, servers.base, NOT_SERVING)
            # A write waits out the 5 s busy timeout, then fails as retryable, not INTERNAL;
            # the writes behind it are refused at once (the test below).
            caught = await running
            with pytest.raises(aio.AioRpcError) as refused:
                await rpc.projects.CreateProject(
                    ps.CreateProjectRequest(project=project_pb2.Project(title="Blocked"))
                )
            _check_retryable(refused.value, "STORE_UNAVAILABLE")
            response = await http.post(f"{servers.base}v1/projects", json={"title": "Blocked"})
            _check_503(response, "STORE_UNAVAILABLE")
        assert _check_one_end(caught) == "failed"
        _check_failed_retryable(caught[-1], "STORE_UNAVAILABLE")
        up = await _readiness_becomes(rpc, http, servers.base, SERVING)
        after = await _generate(rpc, parent, "After")
        assert _check_one_end(after) == "completed"
        await _check_saved(rpc, parent, [before, caught, after])
        print(
            f"\nlocked database: NOT_SERVING after {down:.1f} s, SERVING {up:.1f} s after release"
        )


#: The file of the `store` fixture, in the test's tmp_path.
STORE_FILE = "db.sqlite3"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteProjectStore]:
    """A SQLite project store in tmp_path / STORE_FILE, closed after the test."""
    opened = SqliteProjectStore(tmp_path / STORE_FILE)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_writes_queued_behind_a_locked_database_are_refused_together(
    store: SqliteProjectStore, tmp_path: Path
) -> None:
    with _write_lock(tmp_path / STORE_FILE):
        began = time.monotonic()

        async def create(number: int) -> tuple[Unavailable, float]:
            project = project_pb2.Project(title=f"Blocked {number}")
            try:
                await store.create_project(f"blocked-{number}", project)
            except Unavailable as error:
                return error, time.monotonic() - began
            raise AssertionError("a write went through another process's write lock")

        outcomes = await asyncio.gather(*(create(number) for number in range(4)))
    assert {error.reason for error, _ in outcomes} == {"STORE_UNAVAILABLE"}
    answered = sorted(seconds for _, seconds in outcomes)
    # The first waits out the busy timeout; the three queued behind it wait 0.1 s each,
    # not their own 5 s timeouts in turn (answered after 10, 15 and 20 s).
    assert answered[0] >= BUSY_TIMEOUT_SECONDS - 0.5, answered
    assert answered[-1] < BUSY_TIMEOUT_SECONDS + 2, answered
    released = time.monotonic()
    await store.create_project("after", project_pb2.Project(title="After"))
    assert time.monotonic() - released < 1  # the lock is gone: the next write goes through
    assert (await store.get_project("after")).title == "After"


async def _busy_timeout_ms(store: SqliteProjectStore) -> int:
    async with store._db.execute("PRAGMA busy_timeout") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_write_cancelled_while_refusing_leaves_the_busy_timeout_whole(
    store: SqliteProjectStore, tmp_path: Path
) -> None:
    with _write_lock(tmp_path / STORE_FILE):
        with pytest.raises(Unavailable):  # waits out the timeout: short waits from now on
            await store.create_project("first", project_pb2.Project(title="First"))
        write = asyncio.create_task(
            store.create_project("cancelled", project_pb2.Project(title="Cancelled"))
        )
        await asyncio.sleep(0)  # the write is now sending its short busy timeout
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
    assert await _busy_timeout_ms(store) == int(BUSY_TIMEOUT_SECONDS * 1000)


async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_no_transaction(
    store: SqliteProjectStore, tmp_path: Path
) -> None:
    with _write_lock(tmp_path / STORE_FILE):
        write = asyncio.create_task(
            store.create_project("cancelled", project_pb2.Project(title="Cancelled"))
        )
        await asyncio.sleep(0.3)  # BEGIN IMMEDIATE waits for the lock on the store's thread
        write.cancel()
    # The lock is released: that BEGIN now succeeds, for a caller that has left.
    with pytest.raises(asyncio.CancelledError):
        await write
    assert not store._db.in_transaction
    await store.create_project("after", project_pb2.Project(title="After"))
    assert (await store.get_project("after")).title == "After"
    with pytest.raises(NotFound):
        await store.get_project("cancelled")


async def test_reads_and_the_ping_do_not_wait_behind_a_write_waiting_for_the_lock(
    store: SqliteProjectStore, tmp_path: Path
) -> None:
    await store.create_project("open", project_pb2.Project(title="Open"))
    with _write_lock(tmp_path / STORE_FILE):
        write = asyncio.create_task(
            store.create_project("blocked", project_pb2.Project(title="Blocked"))
        )
        await asyncio.sleep(0.3)  # the write waits for the lock, up to the busy timeout
        assert not write.done()
        began = time.monotonic()
        await store.ping()
        # The reads of keys, limits and owners (auth on a cache miss among them) too.
        assert await store.get_key("no-such-key") is None
        assert await store.list_keys() == []
        assert (await store.get_tenant_limits("no-such-tenant")).tenant == "no-such-tenant"
        assert await store.first_owner("open") == DEFAULT_TENANT
        assert await store.schema_version() >= 1
        assert time.monotonic() - began < 1.0  # not the rest of the write's 5 s
        with pytest.raises(Unavailable):
            await write
    await store.close()
    with pytest.raises(Unavailable, match="not open"):
        await store.ping()


@contextlib.contextmanager
def _tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], check=False).returncode == 0:
                break
            time.sleep(0.25)
        else:
            subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left (ENOSPC); the file."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (2**20, 4096, 1):  # MiBs, then what is left in pages and bytes
            block = b"\0" * size
            for _ in range(2**12):  # bounded: the tmpfs is far smaller than 4 GiB
                try:
                    os.write(descriptor, block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(descriptor)
    return filler


async def test_a_full_disk(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", 256) as disk:
        async with (
            _servers(
                disk / "core", "--synthetic-tokens-per-second=60", "--min-free-disk-mb=2"
            ) as servers,
            connect(servers.core.address) as rpc,
            httpx.AsyncClient(timeout=30) as http,
        ):
            parent = (await rpc.create_project("Full")).name
            before = await _generate(rpc, parent, "Before")
            assert _check_one_end(before) == "completed"
            running = asyncio.create_task(_generate(rpc, parent, "Onto a full disk"))
            await asyncio.sleep(0.5)
            filler = _fill(disk)
            down = await _readiness_becomes(rpc, http, servers.base, NOT_SERVING)
            # A write that needs new pages fails, as a retryable error (bounded attempts: the
            # WAL may still have room for the first few).
            text = "x" * 5000
            refused: aio.AioRpcError | None = None
            for number in range(200):
                try:
                    await rpc.create_project(f"Spill {number}", description=text)
                except aio.AioRpcError as error:
                    refused = error
                    break
            assert refused is not None, "no write failed on a full disk"
            _check_retryable(refused, "STORE_UNAVAILABLE")
            response = await http.post(
                f"{servers.base}v1/projects", json={"title": "Spill", "description": text}
            )
            _check_503(response, "STORE_UNAVAILABLE")
            caught = await running
            # The job may have saved before the disk filled; either way it ends once, cleanly.
            if _check_one_end(caught) == "failed":
                _check_failed_retryable(caught[-1], "STORE_UNAVAILABLE")
            filler.unlink()
            up = await _readiness_becomes(rpc, http, servers.base, SERVING)
            after = await _generate(rpc, parent, "After")
            assert _check_one_end(after) == "completed"
            await _check_saved(rpc, parent, [before, caught, after])
            print(
                f"\nfull disk: NOT_SERVING after {down:.1f} s, SERVING {up:.1f} s after freeing;"
                f" running job {caught[-1].WhichOneof('kind')}"
            )


def _kill(server: ChromaServer) -> None:
    process = server._process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    server._process = None


async def test_chroma_unavailable(tmp_path: Path) -> None:
    chroma = ChromaServer()
    chroma.start()
    try:
        async with (
            _servers(
                tmp_path / "core",
                "--synthetic-tokens-per-second=200",
                f"--chroma-url={chroma.url}",
            ) as servers,
            connect(servers.core.address) as rpc,
            httpx.AsyncClient(timeout=30) as http,
        ):
            parent = (await rpc.create_project("Chroma")).name
            before = await _generate(rpc, parent, "Before")
            assert _check_one_end(before) == "completed"
            running = asyncio.create_task(_generate(rpc, parent, "Into the outage"))
            await asyncio.sleep(0.3)
            _kill(chroma)
            down = await _readiness_becomes(rpc, http, servers.base, NOT_SERVING)
            document = knowledge_pb2.KnowledgeDocument(
                kind=knowledge_pb2.KNOWLEDGE_KIND_STORY_BIBLE, title="Bible", text="Rain."
            )
            with pytest.raises(aio.AioRpcError) as refused:
                await rpc.projects.AddKnowledgeDocument(
                    ps.AddKnowledgeDocumentRequest(parent=parent, document=document)
                )
            _check_retryable(refused.value, "KNOWLEDGE_UNAVAILABLE")
            response = await http.post(
                f"{servers.base}v1/{parent}/knowledge",
                json={"kind": "KNOWLEDGE_KIND_STORY_BIBLE", "title": "Bible", "text": "Rain."},
            )
            _check_503(response, "KNOWLEDGE_UNAVAILABLE")
            # Saved before the index stage met the outage ("not indexed"), or failed cleanly.
            ran = await running
            if _check_one_end(ran) == "failed":
                _check_failed_retryable(ran[-1], "KNOWLEDGE_UNAVAILABLE")
            caught = await _generate(rpc, parent, "Without knowledge")
            if _check_one_end(caught) == "failed":
                _check_failed_retryable(caught[-1], "KNOWLEDGE_UNAVAILABLE")
            chroma.start()
            up = await _readiness_becomes(rpc, http, servers.base, SERVING)
            after = await _generate(rpc, parent, "After")
            assert _check_one_end(after) == "completed"
            await _check_saved(rpc, parent, [before, ran, caught, after])
            print(
                f"\nchroma killed: NOT_SERVING after {down:.1f} s, SERVING again after {up:.1f} s;"
                f" running job {ran[-1].WhichOneof('kind')}, next {caught[-1].WhichOneof('kind')}"
            )
    finally:
        chroma.stop()
        shutil.rmtree(chroma._dir, ignore_errors=True)
