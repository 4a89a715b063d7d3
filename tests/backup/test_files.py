"""SQLite + embedded Chroma: create, verify, restore; damaged backups are named and refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.backup import (
    MANIFEST_FILE,
    BackupError,
    Stores,
    create_backup,
    list_backups,
    read_manifest,
    restore_backup,
    verify_backup,
)
from server.backup import sqlite as sqlite_backup
from server.backup.knowledge import KNOWLEDGE_FILE, record_digest
from server.backup.manifest import describe_file, write_manifest
from tests.backup.conftest import Filled
from tests.backup.damage import flip_byte, remove, truncate


async def test_a_backup_holds_every_store_with_counts_and_checksums(
    filled: Filled, tmp_path: Path
) -> None:
    progress: list[str] = []
    manifest = await create_backup(tmp_path / "b1", filled.stores, progress.append)

    assert sorted(p.name for p in (tmp_path / "b1").iterdir()) == sorted(
        [MANIFEST_FILE, "database.sqlite3", KNOWLEDGE_FILE]
    )
    database = manifest["stores"]["database"]
    assert database["kind"] == "sqlite"
    assert database["tables"]["projects"]["rows"] == 2
    assert database["tables"]["episodes"]["rows"] == 2
    (collection,) = manifest["stores"]["knowledge"]["collections"]
    assert collection["metadata"]["embedder"].startswith("hashing")
    assert collection["metadata"]["dimension"] > 0
    assert collection["count"] == len(collection["records"]) > 4  # documents + episodes
    assert collection["probe"]["ids"]
    for name, entry in manifest["files"].items():
        assert entry == describe_file(tmp_path / "b1" / name)
    assert {"scriptgen", "python", "sqlite", "chromadb"} <= set(manifest["versions"])
    assert any("knowledge" in line for line in progress)
    assert read_manifest(tmp_path / "b1") == manifest
    assert (await verify_backup(tmp_path / "b1")) == manifest


async def test_restore_rebuilds_every_record(filled: Filled, tmp_path: Path) -> None:
    manifest = await create_backup(tmp_path / "b1", filled.stores)
    restored = Stores.from_config(filled.elsewhere(tmp_path / "restored"))

    await restore_backup(tmp_path / "b1", restored)

    assert restored.sqlite_path is not None
    tables = sqlite_backup.describe(restored.sqlite_path)["tables"]
    assert tables == manifest["stores"]["database"]["tables"]
    # The restored dir backs up to the very same records.
    again = await create_backup(tmp_path / "b2", restored)
    assert again["stores"]["database"]["tables"] == manifest["stores"]["database"]["tables"]
    (before,) = manifest["stores"]["knowledge"]["collections"]
    (after,) = again["stores"]["knowledge"]["collections"]
    for field in ("name", "metadata", "configuration", "count", "probe"):
        assert after[field] == before[field]
    assert set(after["records"]) == set(before["records"])
    assert _names(tmp_path) == ["b1", "b2", "live", "restored"]


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.mark.parametrize("file_name", ["database.sqlite3", KNOWLEDGE_FILE, MANIFEST_FILE])
@pytest.mark.parametrize(
    ("damage", "words"),
    [(flip_byte, ""), (truncate, ""), (remove, "missing")],
    ids=["flipped-byte", "truncated", "missing"],
)
async def test_damage_is_named_and_restore_refuses_it(
    filled: Filled, tmp_path: Path, file_name: str, damage: object, words: str
) -> None:
    backup = tmp_path / "b1"
    await create_backup(backup, filled.stores)
    assert callable(damage)
    damage(backup / file_name)

    with pytest.raises(BackupError) as verified:
        await verify_backup(backup)
    assert file_name in str(verified.value)
    assert words in str(verified.value)

    restored = Stores.from_config(filled.elsewhere(tmp_path / "restored"))
    with pytest.raises(BackupError) as refused:
        await restore_backup(backup, restored)
    assert file_name in str(refused.value)
    # Nothing half-restored: no data dir, no staging folder left behind.
    assert _names(tmp_path) == ["b1", "live"]


async def test_an_altered_record_is_named(filled: Filled, tmp_path: Path) -> None:
    """A record changed and the file checksum forged: the record digest still catches it."""
    backup = tmp_path / "b1"
    manifest = await create_backup(backup, filled.stores)
    path = backup / KNOWLEDGE_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["document"] = "Mina secretly hates rain."
    lines[0] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest["files"][KNOWLEDGE_FILE] = describe_file(path)
    write_manifest(backup, manifest)

    with pytest.raises(BackupError) as verified:
        await verify_backup(backup)
    assert f"record {record['id']!r}" in str(verified.value)
    assert record_digest(record) not in json.dumps(manifest)


async def test_a_lost_record_fails_the_counts(filled: Filled, tmp_path: Path) -> None:
    backup = tmp_path / "b1"
    manifest = await create_backup(backup, filled.stores)
    path = backup / KNOWLEDGE_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")
    manifest["files"][KNOWLEDGE_FILE] = describe_file(path)
    write_manifest(backup, manifest)

    with pytest.raises(BackupError, match=r"lacks 1 of \d+ records"):
        await verify_backup(backup)


async def test_restore_refuses_a_data_dir_in_use(filled: Filled, tmp_path: Path) -> None:
    await create_backup(tmp_path / "b1", filled.stores)
    with pytest.raises(BackupError, match="not empty"):
        await restore_backup(tmp_path / "b1", filled.stores)
    assert _names(tmp_path) == ["b1", "live"]


async def test_create_refuses_a_used_folder_and_leaves_no_partial_backup(
    filled: Filled, tmp_path: Path
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "note.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(BackupError, match="not empty"):
        await create_backup(used, filled.stores)

    missing = Stores.from_config(filled.elsewhere(tmp_path / "nowhere"))
    with pytest.raises(BackupError, match="not found"):
        await create_backup(tmp_path / "b1", missing)
    assert _names(tmp_path) == ["live", "used"]


async def test_list_shows_backups_newest_first(filled: Filled, tmp_path: Path) -> None:
    root = tmp_path / "backups"
    await create_backup(root / "20250101T031700Z", filled.stores)
    await create_backup(root / "20250102T031700Z", filled.stores)
    (root / "20250103T031700Z").mkdir()  # no manifest: not a backup
    found = list_backups(root)
    assert len(found) == 2
    assert found[0].counts["database rows"] > 0
    assert found[0].counts["knowledge records"] > 4
    assert all(summary.bytes > 0 and not summary.problem for summary in found)
