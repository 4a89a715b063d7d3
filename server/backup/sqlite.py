"""The SQLite project store: an online snapshot, its checks, and a staged copy for restore.

The snapshot uses SQLite's online backup API in a single step, which reads
the whole database inside one read transaction: writers (WAL mode) carry on,
and the copy is exactly the database as committed when the step began.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from server.backup.errors import BackupError
from server.backup.manifest import canonical, digest

DATABASE_FILE: Final = "database.sqlite3"


def snapshot(source: Path, target: Path) -> datetime:
    """Copy the live database at `source` into the new file `target` (blocking).

    Returns the wall-clock time just before the copy's read transaction began:
    every transaction committed before it is in the copy.
    """
    if not source.exists():
        raise BackupError(f"SQLite database {source}: not found (is SCRIPTGEN_DATA_DIR right?)")
    with (
        closing(sqlite3.connect(source)) as live,
        closing(sqlite3.connect(target)) as copy,
    ):
        before = datetime.now(UTC)
        # pages=-1: one step, one read transaction, one consistent point in time.
        live.backup(copy, pages=-1)
        # The copy is a standalone file: no -wal/-shm beside it.
        copy.execute("PRAGMA journal_mode=DELETE")
    return before


def _tables(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    ).fetchall()
    return [str(row[0]) for row in rows]


def _table_digest(connection: sqlite3.Connection, table: str) -> tuple[int, str]:
    quoted = '"' + table.replace('"', '""') + '"'
    rows = connection.execute(f"SELECT * FROM {quoted}").fetchall()
    encoded = [
        [value.hex() if isinstance(value, bytes) else value for value in row] for row in rows
    ]
    # Sorted by content, so the digest does not depend on storage order (or on a rowid).
    encoded.sort(key=canonical)
    return len(rows), digest(encoded)


def describe(path: Path) -> dict[str, Any]:
    """Integrity check, row count and a digest of the rows of every table (blocking)."""
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        try:
            result = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
            tables = {name: _table_digest(connection, name) for name in _tables(connection)}
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise BackupError(f"{path.name}: not a sound SQLite database: {error}") from None
    if result != ["ok"]:
        raise BackupError(f"{path.name}: PRAGMA integrity_check failed: {'; '.join(result[:5])}")
    return {
        "user_version": int(version),
        "tables": {name: {"rows": rows, "sha256": sha} for name, (rows, sha) in tables.items()},
    }


def check(path: Path, expected: dict[str, Any]) -> list[str]:
    """Problems of the backed-up database against its manifest entry (blocking)."""
    try:
        found = describe(path)
    except BackupError as error:
        return [str(error)]
    problems: list[str] = []
    want: dict[str, Any] = expected.get("tables", {})
    for table in sorted(set(want) | set(found["tables"])):
        if table not in found["tables"]:
            problems.append(f"{path.name}: table {table!r} is missing")
        elif table not in want:
            problems.append(f"{path.name}: table {table!r} is not in the manifest")
        elif found["tables"][table] != want[table]:
            problems.append(
                f"{path.name}: table {table!r} holds {found['tables'][table]['rows']} rows"
                f" whose digest differs from the manifest's ({want[table]['rows']} rows)"
            )
    return problems
