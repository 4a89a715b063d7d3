"""Whether this scriptgen can restore a backup: its schema no newer than the one we migrate to.

The project store's schema version is its newest applied migration
(`schema_migrations`). A core of this version would start on a newer schema
without a word, knowing none of the tables and columns the newer migrations
changed: restore refuses it first, naming the version that wrote it. The
manifest records the version (`stores.database.schema_version`); for backups
made before it did, it is read from the backed-up database itself.

(That pg_restore is at least the major version of the pg_dump that wrote an
archive is checked where pg_restore is chosen: `pg_programs.program`.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from server.backup import sqlite
from server.backup.errors import BackupError
from server.backup.manifest import Manifest
from server.store.migrations import Dialect, migrations


def newest_known(dialect: Dialect) -> int:
    """The newest schema version this scriptgen migrates `dialect` databases to."""
    return max((m.version for m in migrations(dialect)), default=0)


async def _backed_up_version(folder: Path, database: dict[str, Any]) -> int | None:
    if "schema_version" in database:
        return int(database["schema_version"])
    path = folder / database["file"]
    if database.get("kind") == "sqlite":
        return await asyncio.to_thread(sqlite.schema_version, path)
    from server.backup import postgres

    return await asyncio.to_thread(postgres.archive_schema_version, path)


async def check_restorable(folder: Path, manifest: Manifest) -> None:
    """BackupError when the backup's project store schema is newer than this scriptgen's."""
    database: dict[str, Any] = manifest["stores"].get("database", {})
    if not database:
        return
    dialect: Dialect = "sqlite" if database.get("kind") == "sqlite" else "postgres"
    backed_up = await _backed_up_version(folder, database)
    ours = newest_known(dialect)
    if backed_up is not None and backed_up > ours:
        writer = manifest.get("versions", {}).get("scriptgen", "unknown")
        raise BackupError(
            f"{folder}: its project store has schema version {backed_up}, newer than this"
            f" scriptgen's ({ours}): restore it with the scriptgen version that wrote it"
            f" ({writer}) or a newer one"
        )
