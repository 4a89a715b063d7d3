"""`create_backup`: snapshot every store into a new folder, sealed by its manifest.

The project store goes first: its snapshot is the backup's recovery point
(`recovery_point` in the manifest, the wall-clock time just before the
snapshot began), and every write acknowledged before it is in the backup:
story knowledge and Redis keys are read after it, so they hold every record
written before it (unless deleted since), and may hold some written after.

The folder appears only when complete: the backup is written into a hidden
sibling (`.NAME.scriptgen-partial-…`, 0700, locked while written) and renamed
at the end, once every file is 0600 and fsynced, so a crash leaves no folder
that `backup list` or `restore` could mistake for a backup. Partial folders
left by interrupted runs in the same parent are removed by the next `create`
(`folders.sweep_partial`); one it cannot remove is reported, never fatal.

A project store with episodes but no story knowledge at all is refused
(saved episodes are indexed into it): that is a wrong data dir, Chroma URL or
collection prefix far more often than lost knowledge, and a backup without
it would succeed silently. `allow_empty_knowledge` backs it up anyway.
"""

from __future__ import annotations

import asyncio
import platform
import secrets
import shutil
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import chromadb

from server.backup import folders, knowledge, sqlite
from server.backup.errors import BackupError
from server.backup.knowledge import Progress
from server.backup.manifest import FORMAT_VERSION, Manifest, describe_file, write_manifest
from server.backup.stores import Stores, chroma_client


def versions() -> dict[str, str]:
    """Versions of what wrote (or reads) a backup."""
    try:
        scriptgen = metadata.version("scriptgen")
    except metadata.PackageNotFoundError:
        scriptgen = "unknown"
    return {
        "scriptgen": scriptgen,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "chromadb": str(chromadb.__version__),
    }


def _quiet(_: str) -> None:
    """Progress nobody listens to."""


def _check_target(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackupError(f"{folder}: already exists and is not empty; choose a new folder")


async def create_backup(
    folder: Path,
    stores: Stores,
    progress: Progress = _quiet,
    *,
    allow_empty_knowledge: bool = False,
) -> Manifest:
    """Back up every configured store into the new folder `folder`; its manifest.

    `allow_empty_knowledge`: back up a project store with episodes even when
    Chroma holds no story knowledge under the configured prefix.
    """
    _check_target(folder)
    await asyncio.to_thread(folders.make_parents, folder)
    for swept in await asyncio.to_thread(folders.sweep_partial, folder.parent):
        if swept.error:
            progress(f"cannot remove {swept.path}, an unfinished backup: {swept.error}")
        else:
            progress(
                f"removed {swept.path}: an unfinished backup left by an interrupted run"
                f" ({swept.age / 3600:.1f} hours untouched)"
            )
    staging = folder.with_name(folders.partial_name(folder.name, secrets.token_hex(4)))
    folders.make_private_folder(staging)
    try:
        with folders.locked(staging):
            manifest = await _fill(staging, stores, progress, allow_empty_knowledge)
            await asyncio.to_thread(_seal, staging, folder, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"backup complete: {folder}")
    return manifest


async def _fill(
    staging: Path, stores: Stores, progress: Progress, allow_empty_knowledge: bool
) -> Manifest:
    """Write every store's files into `staging`; the manifest describing them."""
    manifest: Manifest = {
        "format": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "stores": {},
    }
    # Project store first: it is the point in time the backup is named for.
    if stores.sqlite_path is not None:
        manifest["stores"]["database"] = await _sqlite(stores.sqlite_path, staging, progress)
    else:
        from server.backup import postgres

        manifest["stores"]["database"] = await postgres.dump(stores.postgres_url, staging, progress)
    # The recovery point: every write acknowledged before it is in this backup.
    manifest["recovery_point"] = manifest["stores"]["database"]["snapshot"]["time"]
    manifest["stores"]["knowledge"] = await asyncio.to_thread(_knowledge, stores, staging, progress)
    if not allow_empty_knowledge:
        _refuse_missing_knowledge(stores, manifest["stores"])
    if stores.redis_url:
        from server.backup import redis_keys

        manifest["stores"]["redis"] = await redis_keys.dump(
            stores.redis_url, stores.redis_prefix, staging, progress
        )
    progress("checksums")
    manifest["files"] = await asyncio.to_thread(_describe_files, staging)
    return manifest


def _describe_files(staging: Path) -> dict[str, Any]:
    return {path.name: describe_file(path) for path in sorted(staging.iterdir()) if path.is_file()}


def _episodes(database: Mapping[str, Any]) -> int:
    """Rows of the project store's episodes table (`episodes`, or `public.episodes`)."""
    tables: Mapping[str, Any] = database.get("tables", {})
    return sum(
        int(described["rows"])
        for name, described in tables.items()
        if name.rpartition(".")[2] == "episodes"
    )


def _refuse_missing_knowledge(stores: Stores, described: Mapping[str, Any]) -> None:
    episodes = _episodes(described["database"])
    records = sum(int(c["count"]) for c in described["knowledge"]["collections"])
    if episodes and not records:
        where = (
            f"the Chroma server {stores.chroma_url} (SCRIPTGEN_CHROMA_URL)"
            if stores.chroma_url
            else f"embedded Chroma in {stores.chroma_path.resolve()} (SCRIPTGEN_DATA_DIR/chroma)"
        )
        prefix = f"{stores.chroma_prefix}-* (SCRIPTGEN_CHROMA_COLLECTION_PREFIX)"
        raise BackupError(
            f"the project store holds {episodes} episodes, but {where} holds no story"
            f" knowledge in collections {prefix}: saved episodes are indexed there, so the"
            " data dir, Chroma URL or prefix is probably wrong; to back up without story"
            " knowledge, pass --allow-empty-knowledge"
        )


def _seal(staging: Path, folder: Path, manifest: Manifest) -> None:
    """Write the manifest, make everything private and durable, then publish it in one rename."""
    write_manifest(staging, manifest)
    folders.seal_tree(staging)
    if folder.exists():
        folder.rmdir()  # checked empty before the backup began
    staging.rename(folder)
    folders.sync_folder(folder.parent)


async def _sqlite(source: Path, staging: Path, progress: Progress) -> dict[str, Any]:
    progress(f"database: SQLite snapshot of {source}")
    target = staging / sqlite.DATABASE_FILE
    before = await asyncio.to_thread(sqlite.snapshot, source, target, progress)
    described = await asyncio.to_thread(sqlite.describe, target)
    rows = sum(table["rows"] for table in described["tables"].values())
    progress(f"database: {len(described['tables'])} tables, {rows} rows")
    snapshot = {
        "time": before.isoformat(timespec="microseconds"),
        "method": "SQLite online backup API in steps, inside one read transaction",
    }
    return {"kind": "sqlite", "file": sqlite.DATABASE_FILE, "snapshot": snapshot, **described}


def _knowledge(stores: Stores, staging: Path, progress: Progress) -> dict[str, Any]:
    where = stores.chroma_url or str(stores.chroma_path)
    progress(f"knowledge: Chroma at {where}")
    target = staging / knowledge.KNOWLEDGE_FILE
    if not stores.chroma_url and not stores.chroma_path.exists():
        target.touch()  # no knowledge was ever added: an empty, still verifiable, backup
        entries: list[dict[str, Any]] = []
    else:
        with chroma_client(stores.chroma_url, stores.chroma_path) as client:
            entries = knowledge.export(client, stores.chroma_prefix, target, progress)
    return {
        "kind": "server" if stores.chroma_url else "embedded",
        "file": knowledge.KNOWLEDGE_FILE,
        "prefix": stores.chroma_prefix,
        "collections": entries,
    }
