"""Two cores, two gateways, Redis and PostgreSQL — all real processes.

* A client streaming through gateway 1 loses it (SIGKILL) and resumes on
  gateway 2 with Last-Event-ID: the whole script, no gap, no duplicate.
* Core 1 gets SIGTERM while it runs jobs: each still ends with exactly one
  terminal event, seen by readers on core 2, and saved episodes stay.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.backends.postgres import fresh_database
from tests.replicas.cluster import (
    CORE_LINE,
    GATEWAY_LINE,
    Frame,
    Process,
    frames,
    iter_frames,
    spawn,
    wait_ready,
)

TERMINAL = {"completed", "failed", "cancelled"}
SSE = {"Accept": "text/event-stream"}


@dataclass
class Cluster:
    cores: list[Process]
    gateways: list[Process]


@pytest.fixture
async def cluster(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> AsyncIterator[Cluster]:
    async with fresh_database(postgres_url) as database_url:
        started: list[Process] = []
        try:
            # Started side by side: each process takes seconds to import its libraries.
            cores = list(
                await asyncio.gather(
                    *(
                        spawn(
                            "server",
                            "--grpc-address=127.0.0.1:0",
                            "--auth=disabled",  # about replicas; tests/security covers keys
                            "--metrics-address=off",
                            f"--data-dir={tmp_path / f'core{number}'}",
                            f"--database-url={database_url}",
                            f"--redis-url={redis_url}",
                            f"--redis-key-prefix={redis_prefix}",
                            "--synthetic-first-token-seconds=0.05",
                            "--synthetic-tokens-per-second=120",
                            "--synthetic-episode-minutes=4",  # long enough to cut mid-job
                            "--shutdown-grace-seconds=0.5",
                            "--owner-lease-seconds=1",
                            "--heartbeat-seconds=1",
                            pattern=CORE_LINE,
                        )
                        for number in (1, 2)
                    )
                )
            )
            started.extend(cores)
            gateways = list(
                await asyncio.gather(
                    *(
                        spawn(
                            "gateway",
                            f"--core-target={core.address}",
                            "--http-address=127.0.0.1:0",
                            pattern=GATEWAY_LINE,
                        )
                        for core in cores
                    )
                )
            )
            started.extend(gateways)
            for gateway in gateways:
                await wait_ready(gateway.address)
            yield Cluster(cores, gateways)
        finally:
            for process in started:
                await process.stop(signal.SIGKILL)


def kind(frame: Frame) -> str:
    return frame.event


def script(found: list[Frame]) -> str:
    return "".join(
        json.loads(f.data)["textDelta"].get("text", "") for f in found if f.event == "delta"
    )


async def test_a_client_resumes_on_another_gateway_after_its_gateway_dies(
    cluster: Cluster,
) -> None:
    one, two = (g.address for g in cluster.gateways)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=30)) as http:
        project = (await http.post(f"{one}v1/projects", json={"title": "Relay"})).json()
        received: list[Frame] = []
        with pytest.raises(httpx.HTTPError):  # noqa: PT012 - the read loop is what breaks
            async with http.stream(
                "POST",
                f"{one}v1/{project['name']}/generations",
                json={"title": "Pilot"},
                headers=SSE,
            ) as response:
                assert response.status_code == 200
                async for frame in iter_frames(response):
                    received.append(frame)
                    if sum(f.event == "delta" for f in received) == 20:
                        cluster.gateways[0].child.kill()
        generation = json.loads(received[0].data)["generation"]
        last = received[-1].id
        async with http.stream(
            "GET",
            f"{two}v1/{generation}/events",
            headers={**SSE, "Last-Event-ID": str(last)},
        ) as response:
            assert response.status_code == 200
            rest = await frames(response)
        everything = received + rest
        episode_name = json.loads(rest[-1].data)["completed"]["episode"]["name"]
        episode = (await http.get(f"{two}v1/{episode_name}")).json()
    assert [f.id for f in everything] == list(range(1, len(everything) + 1))
    assert rest[0].id == last + 1
    assert [f.event for f in everything].count("completed") == 1
    assert sum(f.event in TERMINAL for f in everything) == 1
    assert script(everything) == episode["script"]


async def test_sigterm_on_a_core_ends_each_of_its_jobs_once_and_keeps_what_was_saved(
    cluster: Cluster,
) -> None:
    one, two = (g.address for g in cluster.gateways)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=30)) as http:
        project = (await http.post(f"{one}v1/projects", json={"title": "Shutdown"})).json()
        base = f"{one}v1/{project['name']}/generations"
        # One job completes first: its episode must survive the shutdown.
        async with http.stream("POST", base, json={"title": "Saved"}, headers=SSE) as response:
            saved = await frames(response)
        assert saved[-1].event == "completed"
        names = []
        for number in range(4):
            created = await http.post(base, json={"title": f"Running {number}"})
            assert created.status_code == 201, created.text
            names.append(created.json()["generation"]["name"])

        async def follow(name: str) -> list[Frame]:
            async with http.stream("GET", f"{two}v1/{name}/events", headers=SSE) as response:
                assert response.status_code == 200
                return await frames(response)

        followers = [asyncio.create_task(follow(name)) for name in names]
        await asyncio.sleep(0.5)
        assert await cluster.cores[0].stop(signal.SIGTERM) == 0
        results = await asyncio.wait_for(asyncio.gather(*followers), 30)
        states = [(await http.get(f"{two}v1/{name}")).json()["state"] for name in names]
        episodes = (await http.get(f"{two}v1/{project['name']}/episodes")).json()["episodes"]
    for found in results:
        assert [f.id for f in found] == list(range(1, len(found) + 1))
        assert sum(f.event in TERMINAL for f in found) == 1
        assert found[-1].event in TERMINAL
    completed = [f for found in results for f in found if f.event == "completed"]
    cancelled = [f for found in results for f in found if f.event == "cancelled"]
    assert len(completed) + len(cancelled) == 4
    assert all("shutting down" in json.loads(f.data)["cancelled"]["reason"] for f in cancelled)
    assert set(states) <= {"GENERATION_STATE_CANCELLED", "GENERATION_STATE_SUCCEEDED"}
    saved_episodes = {json.loads(saved[-1].data)["completed"]["episode"]["name"]} | {
        json.loads(f.data)["completed"]["episode"]["name"] for f in completed
    }
    assert {e["name"] for e in episodes} == saved_episodes


async def test_a_gateway_spreads_calls_over_every_core_its_target_names(
    cluster: Cluster,
) -> None:
    # What a headless Service gives `dns:///`: one name, every core's address.
    target = "ipv4:" + ",".join(core.address for core in cluster.cores)
    spread: dict[str, list[int]] = {}
    for policy in ("pick_first", "round_robin"):
        gateway = await spawn(
            "gateway",
            f"--core-target={target}",
            f"--core-load-balancing={policy}",
            "--http-address=127.0.0.1:0",
            pattern=GATEWAY_LINE,
        )
        try:
            await wait_ready(gateway.address)
            before = [_created(core) for core in cluster.cores]
            async with httpx.AsyncClient(timeout=30) as http:
                for number in range(12):
                    created = await http.post(
                        f"{gateway.address}v1/projects", json={"title": f"{policy} {number}"}
                    )
                    assert created.status_code == 201, created.text
                    await asyncio.sleep(0.05)  # round_robin skips a core still connecting
        finally:
            await gateway.stop(signal.SIGKILL)
        await asyncio.sleep(0.2)  # the cores' log lines reach the test through a pipe
        spread[policy] = [_created(core) - b for core, b in zip(cluster.cores, before, strict=True)]
    assert sum(spread["pick_first"]) == 12
    assert 0 in spread["pick_first"]
    assert sum(spread["round_robin"]) == 12
    assert min(spread["round_robin"]) >= 3


def _created(core: Process) -> int:
    return sum(_call_line(line).get("method") == "CreateProject" for line in core.output)


def _call_line(line: str) -> dict[str, object]:
    """A core's JSON log line as a dict; {} for any other output."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def test_a_killed_cores_job_is_ended_for_its_readers_on_another_core(
    cluster: Cluster,
) -> None:
    """Core 1 dies (SIGKILL) mid-job: the readers core 2 serves see one `failed` event
    (UNAVAILABLE, JOB_OWNER_LOST) once the owner's lease lapses — their reader sweep asks —
    and the job's record says FAILED."""
    one, two = (g.address for g in cluster.gateways)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=30)) as http:
        project = (await http.post(f"{one}v1/projects", json={"title": "Orphan"})).json()
        created = await http.post(f"{one}v1/{project['name']}/generations", json={"title": "Cut"})
        assert created.status_code == 201, created.text
        name = created.json()["generation"]["name"]

        async def follow() -> list[Frame]:
            async with http.stream("GET", f"{two}v1/{name}/events", headers=SSE) as response:
                assert response.status_code == 200
                return await frames(response)

        followers = [asyncio.create_task(follow()) for _ in range(3)]
        await asyncio.sleep(0.5)
        await cluster.cores[0].stop(signal.SIGKILL)
        killed = asyncio.get_running_loop().time()
        results = await asyncio.wait_for(asyncio.gather(*followers), 30)
        waited = asyncio.get_running_loop().time() - killed
        record = (await http.get(f"{two}v1/{name}")).json()
    for found in results:
        assert [f.id for f in found] == list(range(1, len(found) + 1))
        assert sum(f.event in TERMINAL for f in found) == 1
        assert found[-1].event == "failed", found[-3:]
        status = json.loads(found[-1].data)["failed"]["status"]
        assert status["code"] == 14  # UNAVAILABLE
        assert "JOB_OWNER_LOST" in json.dumps(status["details"])
    # The same terminal event for every reader: the log took it once.
    assert len({found[-1].id for found in results}) == 1
    assert record["state"] == "GENERATION_STATE_FAILED"
    # Owner lease 1 s, reader sweep every 5/3 s, orphan check each lease: a few seconds.
    assert waited < 10, waited
