"""A backup taken while writers keep writing loses nothing acknowledged before its snapshot.

Writers create projects, story knowledge and episodes (generations) through a
running core, noting the wall-clock time each write was acknowledged, while
`backup create` runs. The snapshot point is the manifest's `recovery_point`:
the wall-clock time just before the project store's snapshot began (SQLite's
one-step backup, PostgreSQL's exported REPEATABLE READ snapshot). The backup
is restored and a core started on it: every write acknowledged before the
recovery point is there and equal, and the restored core holds nothing the
live one did not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from scriptgen.v1 import knowledge_pb2, project_service_pb2

from server import Core, CoreConfig
from server.backup import Stores, create_backup, restore_backup
from tests.backends.postgres import fresh_database
from tests.backup.stories import holdings
from tests.conftest import fast_core_config
from tests.server.rpc import connect

_WRITERS = 3


@dataclass(frozen=True)
class Acknowledged:
    """One write the core acknowledged, and when."""

    kind: str
    project: str
    name: str
    time: datetime


async def _write(target: str, writer: int, log: list[Acknowledged], stop: asyncio.Event) -> None:
    async with connect(target) as stubs:
        round_ = 0
        while not stop.is_set():
            project = await stubs.create_project(f"Live {writer}-{round_}", language="en")
            log.append(Acknowledged("project", project.name, project.name, datetime.now(UTC)))
            added = await stubs.projects.AddKnowledgeDocument(
                project_service_pb2.AddKnowledgeDocumentRequest(
                    parent=project.name,
                    document=knowledge_pb2.KnowledgeDocument(
                        kind=knowledge_pb2.KNOWLEDGE_KIND_STORY_BIBLE,
                        title=f"Bible {writer}-{round_}",
                        text="Ward 9 at night: rain, coffee, a nurse who hums.",
                    ),
                )
            )
            log.append(
                Acknowledged("knowledge", project.name, added.document.name, datetime.now(UTC))
            )
            events = await stubs.generate(project.name, title=f"Pilot {writer}-{round_}")
            assert events[-1].WhichOneof("kind") == "completed", events[-1]
            episode = events[-1].completed.episode.name
            log.append(Acknowledged("episode", project.name, episode, datetime.now(UTC)))
            round_ += 1


def _find(view: dict[str, Any], write: Acknowledged) -> Any:
    """The record of `write` in a holdings view, or None.

    A project's episode count is left out: it grows with episodes written
    later (each proven on its own), and is checked against the episodes.
    """
    project = view.get(write.project)
    if project is None or write.kind == "project":
        if project is None:
            return None
        assert project["project"].get("episodeCount", 0) == len(project["episodes"])
        return {k: v for k, v in project["project"].items() if k != "episodeCount"}
    items = project["episodes" if write.kind == "episode" else "knowledge"]
    return next((item for item in items if item["name"] == write.name), None)


@pytest.fixture(params=["sqlite", "postgresql"])
async def configs(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[CoreConfig, CoreConfig]]:
    """The live core's config and the restored one's (same stores kind, empty)."""
    live = fast_core_config(tmp_path / "live")
    restored = fast_core_config(tmp_path / "restored")
    if request.param == "sqlite":
        yield live, restored
        return
    server: str = request.getfixturevalue("postgres_url")
    async with fresh_database(server) as first, fresh_database(server) as second:
        yield replace(live, database_url=first), replace(restored, database_url=second)


async def test_every_write_acknowledged_before_the_snapshot_is_restored(
    configs: tuple[CoreConfig, CoreConfig], tmp_path: Path
) -> None:
    live_config, restored_config = configs
    log: list[Acknowledged] = []
    stop = asyncio.Event()
    core = Core(live_config)
    await core.start()
    try:
        target = f"127.0.0.1:{core.grpc_port}"
        writers = [asyncio.create_task(_write(target, n, log, stop)) for n in range(_WRITERS)]
        try:
            while len(log) < 3 * _WRITERS:  # noqa: ASYNC110 (polls a list the writers fill)
                await asyncio.sleep(0.01)
            manifest = await create_backup(tmp_path / "b1", Stores.from_config(live_config))
            finished = datetime.now(UTC)
            acknowledged = len(log)
            while len(log) < acknowledged + _WRITERS:  # noqa: ASYNC110 (and after it)
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            await asyncio.gather(*writers)
        live = await holdings(target)
    finally:
        await core.stop()

    point = datetime.fromisoformat(manifest["recovery_point"])
    before = [write for write in log if write.time < point]
    during = [write for write in log if point <= write.time <= finished]
    assert len(before) >= 3 * _WRITERS
    assert during, "no write was acknowledged while the backup ran"

    await restore_backup(tmp_path / "b1", Stores.from_config(restored_config))
    core = Core(restored_config)
    await core.start()
    try:
        restored = await holdings(f"127.0.0.1:{core.grpc_port}")
    finally:
        await core.stop()

    lost = [write for write in before if _find(restored, write) != _find(live, write)]
    assert not lost, f"{len(lost)} of {len(before)} writes before the snapshot: {lost[:3]}"
    # Nothing restored that the live core did not hold, nor any different.
    for name, project in restored.items():
        assert _find(restored, Acknowledged("project", name, name, point)) == _find(
            live, Acknowledged("project", name, name, point)
        )
        assert all(e in live[name]["episodes"] for e in project["episodes"])
        assert all(d in live[name]["knowledge"] for d in project["knowledge"])
    print(
        f"\n{len(before)} writes before the snapshot, {len(during)} during the backup,"
        f" {len(log)} in all; {len(restored)} of {len(live)} projects restored"
    )
