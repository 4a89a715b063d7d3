"""`restore_backup`: bring a verified backup back into empty stores, all or nothing.

The backup is verified first; a damaged one is refused before anything is
touched, and so is one whose project store schema is newer than this
scriptgen's (`compatibility`). Local files (the SQLite database, embedded
Chroma) are rebuilt in a hidden sibling of the data dir (0700, its files
0600: they hold secrets), fsynced, and renamed into place last, in one rename;
every remote store restored before a failure is emptied again. Targets must
be empty: restore never merges into, or overwrites, live data. The backup is
read under a shared lock (`folders.reading`): `prune` leaves it alone.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from server.backup import compatibility, folders, knowledge, sqlite
from server.backup.errors import BackupError
from server.backup.knowledge import Progress
from server.backup.manifest import Manifest
from server.backup.stores import Stores, chroma_client
from server.backup.verify import verify_backup

#: Undoes one restored remote store.
Undo = Callable[[], Awaitable[None]]


def _quiet(_: str) -> None:
    """Progress nobody listens to."""


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _check_kinds(manifest: Manifest, stores: Stores) -> None:
    database = manifest["stores"].get("database", {})
    if (database.get("kind") == "sqlite") != (stores.sqlite_path is not None):
        configured = "SQLite" if stores.sqlite_path is not None else "PostgreSQL"
        raise BackupError(
            f"the backup holds a {database.get('kind')} project store, but {configured}"
            " is configured (SCRIPTGEN_DATABASE_URL)"
        )
    if "redis" in manifest["stores"] and not stores.redis_url:
        raise BackupError("the backup holds Redis keys: set SCRIPTGEN_REDIS_URL to restore them")


async def restore_backup(folder: Path, stores: Stores, progress: Progress = _quiet) -> Manifest:
    """Restore the backup in `folder` into the empty stores `stores` names; its manifest."""
    with folders.reading(folder):
        return await _restore(folder, stores, progress)


async def _restore(folder: Path, stores: Stores, progress: Progress) -> Manifest:
    manifest = await verify_backup(folder, progress, knowledge_trial=False)
    _check_kinds(manifest, stores)
    await compatibility.check_restorable(folder, manifest)
    data_dir = stores.data_dir
    local_database = stores.sqlite_path is not None and stores.sqlite_path.resolve().is_relative_to(
        data_dir.resolve()
    )
    if (local_database or not stores.chroma_url) and not _is_empty(data_dir):
        raise BackupError(f"{data_dir}: not empty; restore only into an empty data directory")
    if stores.sqlite_path is not None and stores.sqlite_path.exists():
        raise BackupError(f"{stores.sqlite_path}: already exists; restore needs an empty database")

    staging = data_dir.parent / f".{data_dir.name}.restore-{secrets.token_hex(4)}"
    folders.make_parents(data_dir)
    folders.make_private_folder(staging)
    undo: list[Undo] = []
    staged_database: Path | None = None
    try:
        described = manifest["stores"]
        if stores.sqlite_path is not None:
            if local_database:
                relative = stores.sqlite_path.resolve().relative_to(data_dir.resolve())
                staged_database = staging / relative
            else:
                staged_database = stores.sqlite_path.with_name(
                    f".{stores.sqlite_path.name}.restore-{secrets.token_hex(4)}"
                )
            await asyncio.to_thread(_restore_sqlite, folder, manifest, staged_database, progress)
        else:
            from server.backup import postgres

            undo.append(
                await postgres.restore(
                    folder / described["database"]["file"],
                    described["database"],
                    stores.postgres_url,
                    progress,
                )
            )
        undo.extend(
            await asyncio.to_thread(
                _restore_knowledge, folder, described, stores, staging, progress
            )
        )
        if "redis" in described:
            from server.backup import redis_keys

            undo.append(
                await redis_keys.restore(
                    folder / described["redis"]["file"],
                    described["redis"],
                    stores.redis_url,
                    stores.redis_prefix,
                    progress,
                )
            )
        await asyncio.to_thread(
            _put_in_place, staging, data_dir, staged_database, stores.sqlite_path, local_database
        )
    except BaseException:
        for step in reversed(undo):
            await step()
        shutil.rmtree(staging, ignore_errors=True)
        if staged_database is not None and not local_database:
            staged_database.unlink(missing_ok=True)
        raise
    progress(f"restore complete from {folder}")
    return manifest


def _restore_sqlite(folder: Path, manifest: Manifest, target: Path, progress: Progress) -> None:
    described = manifest["stores"]["database"]
    progress(f"database: SQLite into {target}")
    folders.make_parents(target)
    folders.create_private_file(target)
    shutil.copyfile(folder / described["file"], target)
    problems = sqlite.check(target, described, manifest["format"])
    if problems:
        raise BackupError("the restored database differs from the backup", tuple(problems))


def _restore_knowledge(
    folder: Path, described: dict[str, Any], stores: Stores, staging: Path, progress: Progress
) -> list[Undo]:
    entries: list[dict[str, Any]] = described["knowledge"]["collections"]
    source = folder / described["knowledge"]["file"]
    path = staging / stores.chroma_path.relative_to(stores.data_dir)
    if not entries and not stores.chroma_url:
        return []  # nothing to create; the core makes its collection on first use
    progress(f"knowledge: {len(entries)} collections into {stores.chroma_url or 'embedded Chroma'}")
    undo: list[Undo] = []
    with chroma_client(stores.chroma_url, path) as client:
        # Before the try: a collection that was there already is never dropped on failure.
        knowledge.refuse_existing(client, entries)
        try:
            knowledge.load(client, entries, source, progress)
            problems = knowledge.check_restored(client, entries, source)
        except BaseException:
            if stores.chroma_url:
                _drop_collections(stores, entries)
            raise
    if problems:
        if stores.chroma_url:
            _drop_collections(stores, entries)
        raise BackupError("the restored story knowledge differs from the backup", tuple(problems))
    if stores.chroma_url:

        async def drop() -> None:
            await asyncio.to_thread(_drop_collections, stores, entries)

        undo.append(drop)
    return undo


def _drop_collections(stores: Stores, entries: list[dict[str, Any]]) -> None:
    with chroma_client(stores.chroma_url, stores.chroma_path) as client:
        existing = {c.name for c in client.list_collections()}
        for entry in entries:
            if entry["name"] in existing:
                client.delete_collection(entry["name"])


def _put_in_place(
    staging: Path,
    data_dir: Path,
    staged_database: Path | None,
    database: Path | None,
    local_database: bool,
) -> None:
    """The last step: rename what was rebuilt into place (a rename cannot half-happen).

    Everything is fsynced before the renames, and the folders renamed into after.
    """
    folders.seal_tree(staging)
    moved: Path | None = None
    if staged_database is not None and database is not None and not local_database:
        folders.seal_file(staged_database)
        staged_database.rename(database)
        moved = database
    try:
        if any(staging.iterdir()):
            if data_dir.exists():
                data_dir.rmdir()  # checked empty before
            staging.rename(data_dir)
        else:
            staging.rmdir()
    except BaseException:
        if moved is not None and staged_database is not None:
            moved.rename(staged_database)
        raise
    for parent in {data_dir.parent, *([] if moved is None else [moved.parent])}:
        folders.sync_folder(parent)
