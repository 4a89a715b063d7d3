"""Project ids per tenant, on every backend: (tenant, id) is a project's key.

Two tenants may each have a project `pilot`, with episodes and idempotency
keys of their own; neither sees the other's. A database from before (schema 4,
ids unique across tenants) keeps every row, each episode with its project's
tenant.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest
from scriptgen.v1 import project_pb2

from server.auth.guard import CALLER, Caller
from server.errors import AlreadyExists, NotFound
from server.store import PostgresProjectStore, SqliteProjectStore
from server.store.migrations import migrations, statements
from tests.backends.postgres import fresh_database
from tests.server.store.conftest import Store


async def test_two_tenants_each_have_a_project_of_one_id(store: Store) -> None:
    alpha = await store.create_project("pilot", project_pb2.Project(title="A"), tenant="alpha")
    beta = await store.create_project("pilot", project_pb2.Project(title="B"), tenant="beta")
    assert alpha.name == beta.name == "projects/pilot"
    with pytest.raises(AlreadyExists) as again:
        await store.create_project("pilot", project_pb2.Project(title="A2"), tenant="alpha")
    assert again.value.reason == "PROJECT_EXISTS"
    assert (await store.get_project("pilot", tenant="alpha")).title == "A"
    assert (await store.get_project("pilot", tenant="beta")).title == "B"
    with pytest.raises(NotFound):
        await store.get_project("pilot", tenant="gamma")

    for number in range(1, 3):
        await store.create_episode("pilot", project_pb2.Episode(title=f"A{number}"), tenant="alpha")
    await store.create_episode("pilot", project_pb2.Episode(title="B1"), tenant="beta")
    # Numbers are per project, so per tenant too.
    assert (await store.get_episode("pilot", 1, tenant="alpha")).title == "A1"
    assert (await store.get_episode("pilot", 1, tenant="beta")).title == "B1"
    with pytest.raises(NotFound):
        await store.get_episode("pilot", 2, tenant="beta")
    listed, _ = await store.list_episodes("pilot", 10, None, tenant="beta")
    assert [e.title for e in listed] == ["B1"]
    assert (await store.get_project("pilot", tenant="alpha")).episode_count == 2
    assert (await store.get_project("pilot", tenant="beta")).episode_count == 1
    projects, _ = await store.list_projects(10, None, tenant="beta")
    assert [(p.name, p.title) for p in projects] == [("projects/pilot", "B")]

    updated = await store.update_project(
        "pilot", project_pb2.Project(title="B, retitled"), ["title"], tenant="beta"
    )
    assert updated.title == "B, retitled"
    assert (await store.get_project("pilot", tenant="alpha")).title == "A"

    with pytest.raises(NotFound):
        await store.delete_episode("pilot", 2, tenant="beta")
    await store.delete_episode("pilot", 1, tenant="beta")
    assert (await store.get_episode("pilot", 1, tenant="alpha")).title == "A1"
    await store.delete_project("pilot", force=True, tenant="alpha")
    assert (await store.get_project("pilot", tenant="beta")).title == "B, retitled"
    with pytest.raises(NotFound):
        await store.get_episode("pilot", 1, tenant="alpha")


async def test_without_a_tenant_calls_are_for_the_caller_in_scope(store: Store) -> None:
    await store.create_project("pilot", project_pb2.Project(title="Default"))
    await store.create_project("pilot", project_pb2.Project(title="Beta"), tenant="beta")
    assert (await store.get_project("pilot")).title == "Default"
    token = CALLER.set(Caller("beta"))
    try:
        # What a job's pipeline does: no tenant given, the call's context decides.
        saved = await store.create_episode("pilot", project_pb2.Episode(title="B1"))
        assert (await store.get_project("pilot")).title == "Beta"
    finally:
        CALLER.reset(token)
    assert saved.name == "projects/pilot/episodes/1"
    assert (await store.get_project("pilot")).episode_count == 0
    assert (await store.get_project("pilot", tenant="beta")).episode_count == 1


async def test_request_ids_are_per_tenant(store: Store) -> None:
    project = project_pb2.Project(title="Show")
    first = await store.create_project(
        "p1", project, request_id="key", fingerprint="f", tenant="alpha"
    )
    # The same key of another tenant is another request: it creates its own project.
    other = await store.create_project(
        "p1", project, request_id="key", fingerprint="g", tenant="beta"
    )
    again = await store.create_project(
        "p2", project, request_id="key", fingerprint="f", tenant="alpha"
    )
    assert first.name == other.name == again.name == "projects/p1"
    projects, _ = await store.list_projects(10, None, tenant="alpha")
    assert [p.name for p in projects] == ["projects/p1"]


async def test_first_owner_is_the_oldest_project_of_an_id(store: Store) -> None:
    assert await store.first_owner("pilot") is None
    await store.create_project("pilot", project_pb2.Project(title="B"), tenant="beta")
    await store.create_project("pilot", project_pb2.Project(title="A"), tenant="alpha")
    assert await store.first_owner("pilot") == "beta"


# Schema 4 (ids unique across tenants), with projects of two tenants, episodes and a kept key.
_SCHEMA_4_ROWS = [
    "INSERT INTO projects (id, title, type, logline, description, language, create_time,"
    " update_time, next_episode_number, tenant)"
    " VALUES ('old', 'Old', 1, '', '', 'en', 1, 1, 3, 'default'),"
    " ('mine', 'Mine', 1, '', '', 'ko', 2, 2, 2, 'acme')",
    "INSERT INTO episodes (project_id, number, title, script, outline, generation, scene_count,"
    " word_count, cast_json, create_time) VALUES"
    " ('old', 1, 'O1', 'INT. A', '', 'generations/g1', 1, 2, '[]', 3),"
    " ('old', 2, 'O2', 'INT. B', '', 'generations/g2', 1, 2, '[]', 4),"
    " ('mine', 1, 'M1', 'INT. C', '', 'generations/g3', 1, 2, '[\"지수\"]', 5)",
    "INSERT INTO project_request_ids (request_id, fingerprint, project_id, create_time)"
    " VALUES ('acme/k1', 'f', 'mine', 9000000000000000), ('k2', 'f', 'old', 9000000000000000)",
]


async def _check_migrated(store: Store) -> None:
    assert await store.schema_version() == migrations("sqlite")[-1].version
    assert (await store.get_project("old")).episode_count == 2
    mine = await store.get_project("mine", tenant="acme")
    assert (mine.title, mine.episode_count) == ("Mine", 1)
    with pytest.raises(NotFound):
        await store.get_project("mine")
    assert list((await store.get_episode("mine", 1, tenant="acme")).cast) == ["지수"]
    # Numbering carries on; another tenant may now take the id.
    assert (await store.create_episode("old", project_pb2.Episode(title="O3"))).number == 3
    await store.create_project("mine", project_pb2.Project(title="Also mine"))
    assert (await store.get_project("mine", tenant="acme")).title == "Mine"
    # Kept keys still answer their project.
    again = await store.create_project(
        "x", project_pb2.Project(title="Mine"), request_id="k1", fingerprint="f", tenant="acme"
    )
    assert again.title == "Mine"


async def test_a_sqlite_database_of_schema_4_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE schema_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_time INTEGER NOT NULL)"
        )
        for migration in migrations("sqlite")[:4]:
            for statement in statements(migration.sql):
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, 0)",
                (migration.version, migration.name),
            )
        for statement in _SCHEMA_4_ROWS:
            db.execute(statement)
    store = SqliteProjectStore(path)
    await store.open()
    try:
        await _check_migrated(store)
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        tenants = db.execute("SELECT request_id, tenant FROM project_request_ids ORDER BY 1")
        assert tenants.fetchall() == [("acme/k1", "acme"), ("k2", "default")]


async def test_a_postgres_database_of_schema_4_keeps_its_rows(postgres_url: str) -> None:
    async with fresh_database(postgres_url) as url:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "CREATE TABLE schema_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_time BIGINT NOT NULL)"
            )
            for migration in migrations("postgres")[:4]:
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2, 0)",
                    migration.version,
                    migration.name,
                )
            for statement in _SCHEMA_4_ROWS:
                await connection.execute(statement)
        finally:
            await connection.close()
        store = PostgresProjectStore(url)
        await store.open()
        try:
            await _check_migrated(store)
        finally:
            await store.close()
