"""One contract for every job registry: in memory and in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from google.protobuf import timestamp_pb2
from scriptgen.v1 import generation_pb2

from server.auth.records import DEFAULT_TENANT
from server.errors import AlreadyExists, NotFound
from server.events import open_redis
from server.jobs import JobRegistry, MemoryJobRegistry, RedisJobRegistry
from server.jobs.redis_registry import UNENDED_EXTRA_SECONDS


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[JobRegistry]:
    if request.param == "memory":
        yield MemoryJobRegistry()
        return
    connection = open_redis(
        request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    )
    try:
        yield RedisJobRegistry(connection)
    finally:
        await connection.aclose()


def job(
    number: int, parent: str = "projects/p1", request_id: str = ""
) -> generation_pb2.Generation:
    created = timestamp_pb2.Timestamp()
    created.FromMicroseconds(1_700_000_000_000_000 + number * 1000)
    return generation_pb2.Generation(
        name=f"generations/g{number:04d}",
        parent=parent,
        title=f"Ep {number}",
        state=generation_pb2.GENERATION_STATE_QUEUED,
        create_time=created,
        request_id=request_id,
    )


async def test_create_get_update(registry: JobRegistry) -> None:
    first = job(1)
    assert await registry.create(first, "f1") == first
    assert await registry.get(first.name) == first
    first.state = generation_pb2.GENERATION_STATE_SUCCEEDED
    first.episode = "projects/p1/episodes/e1"
    await registry.update(first)
    assert await registry.get(first.name) == first
    with pytest.raises(NotFound) as raised:
        await registry.get("generations/gnope")
    assert raised.value.reason == "GENERATION_NOT_FOUND"


async def test_a_request_id_names_one_job(registry: JobRegistry) -> None:
    first = job(1, request_id="key-1")
    await registry.create(first, "same")
    again = await registry.create(job(2, request_id="key-1"), "same")
    assert again.name == first.name
    with pytest.raises(AlreadyExists) as raised:
        await registry.create(job(3, request_id="key-1"), "different")
    assert raised.value.reason == "REQUEST_ID_REUSED"
    with pytest.raises(NotFound):
        await registry.get(job(2).name)


async def test_concurrent_creates_with_one_request_id_make_one_job(registry: JobRegistry) -> None:
    made = await asyncio.gather(
        *(registry.create(job(n, request_id="race"), "same") for n in range(1, 11))
    )
    assert len({m.name for m in made}) == 1


async def test_list_pages_newest_first_per_project_and_all(registry: JobRegistry) -> None:
    for number in range(1, 8):
        await registry.create(job(number, "projects/p1" if number % 2 else "projects/p2"), "f")
    names: list[str] = []
    after = None
    for _ in range(10):
        page, after = await registry.list("projects/p1", 2, after)
        names.extend(j.name for j in page)
        if after is None:
            break
    assert names == [job(n).name for n in (7, 5, 3, 1)]
    everything, more = await registry.list("", 100, None)
    assert [j.name for j in everything] == [job(n).name for n in range(7, 0, -1)]
    assert more is None


async def test_ended_redis_records_expire_after_retention(
    redis_url: str, redis_prefix: str
) -> None:
    connection = open_redis(redis_url, redis_prefix)
    try:
        registry = RedisJobRegistry(connection, retention_seconds=1)
        ended, running = job(1), job(2)
        await registry.create(ended, "f")
        await registry.create(running, "f")
        ended.state = generation_pb2.GENERATION_STATE_CANCELLED
        await registry.update(ended)
        await asyncio.sleep(1.3)
        with pytest.raises(NotFound):
            await registry.get(ended.name)
        page, _ = await registry.list("projects/p1", 10, None)
        assert [j.name for j in page] == [running.name]
    finally:
        await connection.aclose()


async def test_two_tenants_projects_of_one_id_list_their_own_jobs(registry: JobRegistry) -> None:
    # Project ids are per tenant: `projects/pilot` of alpha and of beta are two projects.
    for number in range(1, 7):
        await registry.create(
            job(number, parent="projects/pilot"),
            f"f{number}",
            tenant="alpha" if number % 2 else "beta",
        )
    for tenant, expected in (("alpha", [5, 3, 1]), ("beta", [6, 4, 2])):
        seen: list[str] = []
        after = None
        while True:
            page, after = await registry.list("projects/pilot", 2, after, tenant=tenant)
            seen.extend(j.name for j in page)
            if after is None:
                break
        assert seen == [f"generations/g{n:04d}" for n in expected]
    with pytest.raises(NotFound):
        await registry.get("generations/g0002", tenant="alpha")


async def test_redis_job_lists_drop_names_older_than_any_record_and_expire(
    redis_url: str, redis_prefix: str
) -> None:
    connection = open_redis(redis_url, redis_prefix)
    try:
        registry = RedisJobRegistry(connection, retention_seconds=3600)
        horizon_micros = (3600 + UNENDED_EXTRA_SECONDS) * 1_000_000
        newest = job(100)
        indexes = [
            connection.key("jobs", "*"),
            connection.key("jobs", "projects/p1"),
            connection.key("jobs-of", DEFAULT_TENANT),
        ]
        newest_micros = newest.create_time.ToMicroseconds()
        for index in indexes:
            # Names whose records expired long ago, and one just inside the horizon.
            await connection.client.zadd(
                index,
                {
                    "generations/gancient": newest_micros - 3 * horizon_micros,
                    "generations/gjustold": newest_micros - horizon_micros - 1,
                    "generations/gkept": newest_micros - horizon_micros + 1_000_000,
                },
            )
        await registry.create(newest, "f")
        for index in indexes:
            # Before: the sets only grew (lists dropped only the names they met).
            assert await connection.client.zrange(index, 0, -1) == [
                b"generations/gkept",
                newest.name.encode(),
            ]
            assert 0 < await connection.client.ttl(index) <= 3600 + UNENDED_EXTRA_SECONDS
    finally:
        await connection.aclose()
