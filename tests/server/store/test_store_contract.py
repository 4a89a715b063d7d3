"""The ProjectStore contract, run against every backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
from google.protobuf import timestamp_pb2
from scriptgen.v1 import project_pb2

from server.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from server.store import PostgresProjectStore
from server.store.migrations import Dialect, migrations
from tests.server.store.conftest import Store, StoreFactory


def _micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.ToMicroseconds()


def _dialect(store: Store) -> Dialect:
    return "postgres" if isinstance(store, PostgresProjectStore) else "sqlite"


async def test_migrations_apply_once_even_when_stores_open_together(
    make_store: StoreFactory,
) -> None:
    stores = await asyncio.gather(*(make_store() for _ in range(4)))
    latest = migrations(_dialect(stores[0]))[-1].version
    assert latest >= 2
    assert [await store.schema_version() for store in stores] == [latest] * 4
    reopened = await make_store()  # a no-op, not an error
    assert await reopened.schema_version() == latest


async def test_project_round_trip(store: Store) -> None:
    created = await store.create_project(
        "night-shift",
        project_pb2.Project(
            title="야간 근무",
            type=project_pb2.PROJECT_TYPE_THRILLER,
            logline="A nurse finds a pattern.",
            description="Line one\nline two",
            language="ko",
        ),
    )
    assert created.name == "projects/night-shift"
    assert created.title == "야간 근무" and created.language == "ko"
    assert created.type == project_pb2.PROJECT_TYPE_THRILLER
    assert created.description == "Line one\nline two"
    assert created.episode_count == 0
    assert created.create_time == created.update_time and _micros(created.create_time) > 0
    assert await store.get_project("night-shift") == created


async def test_project_errors(store: Store) -> None:
    await store.create_project("show", project_pb2.Project(title="Show"))
    with pytest.raises(AlreadyExists) as exists:
        await store.create_project("show", project_pb2.Project(title="Again"))
    assert exists.value.reason == "PROJECT_EXISTS"
    for missing in (
        store.get_project("missing"),
        store.update_project("missing", project_pb2.Project(title="T"), ["title"]),
        store.delete_project("missing", force=True),
        store.create_episode("missing", project_pb2.Episode(title="E")),
        store.list_episodes("missing", 10, None),
    ):
        with pytest.raises(NotFound) as raised:
            await missing
        assert raised.value.reason == "PROJECT_NOT_FOUND"
        assert raised.value.name == "projects/missing"
    assert (await store.get_project("show")).title == "Show"


async def test_update_changes_only_the_named_fields(store: Store) -> None:
    created = await store.create_project(
        "show", project_pb2.Project(title="Show", logline="Old", language="en")
    )
    await asyncio.sleep(0.002)
    changes = project_pb2.Project(
        title="New", logline="ignored", type=project_pb2.PROJECT_TYPE_COMEDY, language="ko"
    )
    updated = await store.update_project("show", changes, ["title", "type", "language"])
    assert (updated.title, updated.logline, updated.language) == ("New", "Old", "ko")
    assert updated.type == project_pb2.PROJECT_TYPE_COMEDY
    assert updated.create_time == created.create_time
    assert _micros(updated.update_time) > _micros(created.update_time)
    assert await store.get_project("show") == updated


async def test_projects_list_newest_first_in_pages(store: Store) -> None:
    for index in range(7):
        await store.create_project(f"p{index}", project_pb2.Project(title=f"P{index}"))
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page, after = await store.list_projects(3, after)
        seen.extend(project.name for project in page)
        pages += 1
        if after is None:
            break
    assert pages == 3
    assert seen == [f"projects/p{index}" for index in reversed(range(7))]


async def test_episodes_are_numbered_and_listed_without_scripts(store: Store) -> None:
    await store.create_project("show", project_pb2.Project(title="Show", language="ko"))
    saved = [
        await store.create_episode(
            "show",
            project_pb2.Episode(
                title=f"E{index}",
                script=f"INT. 병원 - NIGHT\n\n장면 {index}\n",
                outline="beats",
                generation="generations/g1",
                scene_count=3,
                word_count=120,
                cast=["지수", "MINHO"],
            ),
        )
        for index in range(1, 6)
    ]
    assert [episode.number for episode in saved] == [1, 2, 3, 4, 5]
    third = await store.get_episode("show", 3)
    assert third == saved[2]
    assert third.name == "projects/show/episodes/3"
    assert third.script == "INT. 병원 - NIGHT\n\n장면 3\n" and list(third.cast) == ["지수", "MINHO"]
    assert (third.scene_count, third.word_count, third.outline) == (3, 120, "beats")
    assert _micros(third.create_time) > 0
    assert (await store.get_project("show")).episode_count == 5

    listed: list[project_pb2.Episode] = []
    after = None
    while True:
        page, after = await store.list_episodes("show", 2, after)
        listed.extend(page)
        if after is None:
            break
    assert [episode.number for episode in listed] == [1, 2, 3, 4, 5]
    assert all(episode.script == "" and episode.outline == "" for episode in listed)
    assert listed[2].title == "E3" and list(listed[2].cast) == ["지수", "MINHO"]


async def test_latest_episodes_come_in_one_call_with_outlines(store: Store) -> None:
    with pytest.raises(NotFound) as raised:
        await store.latest_episodes("missing", 3)
    assert raised.value.reason == "PROJECT_NOT_FOUND"
    await store.create_project("show", project_pb2.Project(title="Show"))
    await store.create_project("other", project_pb2.Project(title="Other"))
    assert await store.latest_episodes("show", 3) == []
    for index in range(1, 6):
        await store.create_episode(
            "show",
            project_pb2.Episode(title=f"E{index}", script="INT. ROOM - DAY\n", outline=f"b{index}"),
        )
    await store.create_episode("other", project_pb2.Episode(title="X", outline="x"))
    await store.delete_episode("show", 4)
    latest = await store.latest_episodes("show", 3)
    assert [(e.number, e.title, e.outline) for e in latest] == [
        (2, "E2", "b2"),
        (3, "E3", "b3"),
        (5, "E5", "b5"),
    ]
    assert all(e.script == "" for e in latest)
    assert latest[-1].name == "projects/show/episodes/5"
    full = await store.get_episode("show", 5)
    assert latest[-1].create_time == full.create_time and latest[-1].generation == full.generation
    assert [e.number for e in await store.latest_episodes("show", 10)] == [1, 2, 3, 5]
    assert [e.number for e in await store.latest_episodes("show", 1)] == [5]
    with pytest.raises(NotFound):
        await store.latest_episodes("show", 3, tenant="another")


async def test_deleted_episode_numbers_are_never_reused(store: Store) -> None:
    await store.create_project("show", project_pb2.Project(title="Show"))
    for _ in range(3):
        await store.create_episode("show", project_pb2.Episode(title="E"))
    await store.delete_episode("show", 3)
    with pytest.raises(NotFound) as raised:
        await store.get_episode("show", 3)
    assert raised.value.reason == "EPISODE_NOT_FOUND"
    with pytest.raises(NotFound) as again:
        await store.delete_episode("show", 3)
    assert again.value.reason == "EPISODE_NOT_FOUND"
    assert (await store.create_episode("show", project_pb2.Episode(title="E"))).number == 4


async def test_deleting_a_project_with_episodes_needs_force(store: Store) -> None:
    await store.create_project("empty", project_pb2.Project(title="Empty"))
    await store.delete_project("empty", force=False)
    await store.create_project("show", project_pb2.Project(title="Show"))
    await store.create_episode("show", project_pb2.Episode(title="E"))
    with pytest.raises(FailedPrecondition) as raised:
        await store.delete_project("show", force=False)
    assert raised.value.reason == "PROJECT_HAS_EPISODES"
    await store.delete_project("show", force=True)
    with pytest.raises(NotFound):
        await store.get_episode("show", 1)
    # The id is free again, and numbering starts over for the new project.
    await store.create_project("show", project_pb2.Project(title="Show"))
    assert (await store.create_episode("show", project_pb2.Episode(title="E"))).number == 1


async def test_episode_numbers_are_atomic_across_stores(make_store: StoreFactory) -> None:
    # Two stores on one database stand in for two cores.
    first, second = await make_store(), await make_store()
    await first.create_project("show", project_pb2.Project(title="Show"))
    saved = await asyncio.gather(
        *(
            (first if index % 2 else second).create_episode(
                "show", project_pb2.Episode(title=f"E{index}")
            )
            for index in range(60)
        )
    )
    assert sorted(episode.number for episode in saved) == list(range(1, 61))
    assert (await second.get_project("show")).episode_count == 60


async def test_data_survives_a_reopen(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.create_project("show", project_pb2.Project(title="Show", language="ko"))
    await store.create_episode(
        "show", project_pb2.Episode(title="E1", script="INT. X - DAY\n", cast=["지수"])
    )
    await store.close()
    reopened = await make_store()
    project = await reopened.get_project("show")
    episode = await reopened.get_episode("show", 1)
    assert project.language == "ko" and project.episode_count == 1
    assert episode.script == "INT. X - DAY\n" and list(episode.cast) == ["지수"]


async def test_a_closed_store_is_unavailable(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.ping()
    await store.close()
    with pytest.raises(Unavailable) as raised:
        await store.ping()
    assert raised.value.reason == "STORE_UNAVAILABLE"
    with pytest.raises(Unavailable):
        await store.get_project("show")


async def test_a_request_id_returns_the_project_it_created(store: Store) -> None:
    project = project_pb2.Project(title="Show")
    first = await store.create_project("p1", project, request_id="key-1", fingerprint="f")
    # A retry: another random id, the same request → the first project, nothing new.
    again = await store.create_project("p2", project, request_id="key-1", fingerprint="f")
    assert again == first
    projects, _ = await store.list_projects(10, None)
    assert [p.name for p in projects] == ["projects/p1"]
    with pytest.raises(AlreadyExists) as raised:
        await store.create_project("p3", project, request_id="key-1", fingerprint="other")
    assert raised.value.reason == "REQUEST_ID_REUSED"
    # Keys are independent of each other.
    other = await store.create_project("p4", project, request_id="key-2", fingerprint="other")
    assert other.name == "projects/p4"


async def test_a_failed_create_keeps_no_request_id(store: Store) -> None:
    await store.create_project("taken", project_pb2.Project(title="Show"))
    with pytest.raises(AlreadyExists) as raised:
        await store.create_project(
            "taken", project_pb2.Project(title="Show"), request_id="key", fingerprint="a"
        )
    assert raised.value.reason == "PROJECT_EXISTS"
    created = await store.create_project(
        "free", project_pb2.Project(title="Show"), request_id="key", fingerprint="b"
    )
    assert created.name == "projects/free"


async def test_a_request_id_of_a_deleted_project_is_not_found(store: Store) -> None:
    project = project_pb2.Project(title="Show")
    await store.create_project("p1", project, request_id="key", fingerprint="f")
    await store.delete_project("p1", force=True)
    with pytest.raises(NotFound) as raised:
        await store.create_project("p2", project, request_id="key", fingerprint="f")
    assert raised.value.reason == "PROJECT_NOT_FOUND"


async def test_request_ids_expire(make_store: StoreFactory) -> None:
    store = await make_store(request_id_ttl_seconds=0.2)
    project = project_pb2.Project(title="Show")
    await store.create_project("p1", project, request_id="key", fingerprint="f")
    assert (
        await store.create_project("p2", project, request_id="key", fingerprint="f")
    ).name == "projects/p1"
    await asyncio.sleep(0.3)
    # Forgotten: the key is free for any request, and is kept again from now on.
    fresh = await store.create_project("p3", project, request_id="key", fingerprint="g")
    assert fresh.name == "projects/p3"
    with pytest.raises(AlreadyExists):
        await store.create_project("p4", project, request_id="key", fingerprint="f")


async def test_racing_requests_with_one_key_create_one_project(make_store: StoreFactory) -> None:
    stores = [await make_store() for _ in range(3)]
    project = project_pb2.Project(title="Show")
    created = await asyncio.gather(
        *(
            stores[index % 3].create_project(
                f"p{index}", project, request_id="shared", fingerprint="f"
            )
            for index in range(24)
        )
    )
    assert len({p.name for p in created}) == 1
    projects, _ = await stores[0].list_projects(100, None)
    assert [p.name for p in projects] == [created[0].name]
