"""The distributed stores' backup (PostgreSQL, a Chroma server, Redis): damaged Redis keys.

`redis.jsonl` flipped, truncated or missing is named by verify, and restore
refuses it before touching any target; a key's changed expiry is named even
with the file's checksum forged; and a restore that fails at Redis (a key
already there under the prefix) undoes the database and story knowledge it
had restored.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from server import Core, CoreConfig
from server.backup import BackupError, Stores, create_backup, restore_backup, verify_backup
from server.backup import postgres as postgres_backup
from server.backup.manifest import describe_file, write_manifest
from server.backup.redis_keys import REDIS_FILE, check_file, entry_digest
from server.backup.stores import chroma_client
from tests.backends.postgres import fresh_database
from tests.backends.redis import delete_prefixed
from tests.backup.damage import flip_byte, remove, truncate
from tests.backup.stories import populate, redis_view
from tests.backup.test_rehearsal import distributed  # noqa: F401 (the stores' fixture)


@dataclass(frozen=True)
class Backed:
    """A backup of the distributed stores, and an empty target to restore it into."""

    folder: Path
    manifest: dict[str, Any]
    #: The live stores' config, with an empty database and data dir: the restore target.
    target: CoreConfig


def _collections(config: CoreConfig) -> list[str]:
    prefix = f"{config.knowledge.collection_prefix}-"
    with chroma_client(config.knowledge.chroma_url, config.data_dir) as client:
        return sorted(c.name for c in client.list_collections() if c.name.startswith(prefix))


def _drop_collections(config: CoreConfig) -> None:
    with chroma_client(config.knowledge.chroma_url, config.data_dir) as client:
        for name in _collections(config):
            client.delete_collection(name)


async def _relations(url: str) -> list[str]:
    """What makes a database not empty (nothing, after an undone or refused restore)."""
    connection = await asyncpg.connect(url)
    try:
        return [str(row[0]) for row in await connection.fetch(postgres_backup._CONTENTS)]
    finally:
        await connection.close()


@pytest.fixture
async def backed(
    distributed: CoreConfig,  # noqa: F811 (the imported fixture)
    postgres_url: str,
    tmp_path: Path,
) -> AsyncIterator[Backed]:
    """A filled core's stores backed up; then its collections and Redis keys removed."""
    config = distributed
    core = Core(config)
    await core.start()
    try:
        await populate(f"127.0.0.1:{core.grpc_port}", projects=1)
    finally:
        await core.stop()
    manifest = await create_backup(tmp_path / "b1", Stores.from_config(config))
    assert manifest["stores"]["redis"]["count"] > 0
    await asyncio.to_thread(_drop_collections, config)
    delete_prefixed(config.redis_url, config.redis_key_prefix)
    async with fresh_database(postgres_url) as empty:
        target = replace(config, database_url=empty, data_dir=tmp_path / "restored")
        yield Backed(tmp_path / "b1", manifest, target)


async def _assert_untouched(backed: Backed, keys: dict[str, Any]) -> None:
    assert await _relations(backed.target.database_url) == []
    assert await asyncio.to_thread(_collections, backed.target) == []
    assert await redis_view(backed.target.redis_url, backed.target.redis_key_prefix) == keys
    # No data dir, and no staging folder beside it.
    assert not backed.target.data_dir.exists()
    assert not [p.name for p in backed.target.data_dir.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("damage", "words"),
    [(flip_byte, "SHA-256 mismatch"), (truncate, "truncated"), (remove, "missing")],
    ids=["flipped-byte", "truncated", "missing"],
)
async def test_a_damaged_key_file_is_named_and_refused(
    backed: Backed, damage: Callable[[Path], None], words: str
) -> None:
    damage(backed.folder / REDIS_FILE)

    with pytest.raises(BackupError) as verified:
        await verify_backup(backed.folder)
    (problem,) = verified.value.problems
    assert f"{REDIS_FILE}: {words}" in problem
    with pytest.raises(BackupError, match=rf"{REDIS_FILE}: {words}"):
        await restore_backup(backed.folder, Stores.from_config(backed.target))
    await _assert_untouched(backed, {})


async def test_a_changed_expiry_is_named_even_with_a_forged_checksum(backed: Backed) -> None:
    path = backed.folder / REDIS_FILE
    lines = path.read_text(encoding="ascii").splitlines()
    entry = json.loads(lines[0])
    hour_later = int(time.time() * 1000) + 3_600_000
    entry["expire_at_ms"] = hour_later if entry["expire_at_ms"] is None else None
    lines[0] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    manifest = backed.manifest
    manifest["files"][REDIS_FILE] = describe_file(path)
    write_manifest(backed.folder, manifest)

    name = base64.b64decode(entry["key"]).decode()
    with pytest.raises(BackupError) as verified:
        await verify_backup(backed.folder)
    assert verified.value.problems == (
        f"{REDIS_FILE}: key {name!r}: digest mismatch or not in the manifest",
    )
    with pytest.raises(BackupError, match=re.escape(f"key {name!r}: digest mismatch")):
        await restore_backup(backed.folder, Stores.from_config(backed.target))
    await _assert_untouched(backed, {})
    # Format 1 left the expiry out of a key's digest: its backups still verify.
    entries = [json.loads(line) for line in lines]
    legacy = {
        **manifest["stores"]["redis"],
        "keys": {base64.b64decode(e["key"]).decode(): entry_digest(e, 1) for e in entries},
    }
    assert check_file(path, legacy, 1) == []
    assert len(check_file(path, legacy)) == len(entries)


async def test_a_key_already_in_redis_undoes_the_database_and_knowledge(
    backed: Backed,
) -> None:
    target = backed.target
    intruder = f"{target.redis_key_prefix}job:someone-else"
    client = Redis.from_url(target.redis_url)
    try:
        await client.set(intruder, "not from the backup")
    finally:
        await client.aclose()
    keys = await redis_view(target.redis_url, target.redis_key_prefix)
    progress: list[str] = []

    with pytest.raises(BackupError, match=re.escape(f"Redis already holds {intruder!r}")):
        await restore_backup(backed.folder, Stores.from_config(target), progress.append)
    # The database and story knowledge were restored before Redis refused, then undone.
    assert any(line.startswith("database: pg_restore: table ") for line in progress), progress
    assert any(line.startswith("knowledge: ") for line in progress), progress
    await _assert_untouched(backed, keys)
