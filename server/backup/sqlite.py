"""The SQLite project store: an online snapshot, its checks, and a staged copy for restore.

The snapshot uses SQLite's online backup API inside one read transaction,
opened on the live connection before the first page is copied: the copy goes
in steps (reporting progress) while writers (WAL mode) carry on, and since
the read transaction stays open across the steps, the copy is exactly the
database as committed when it began — the backup never restarts.

Every row has a digest (the canonical JSON of its values), keyed in the
manifest by its primary key (the rowid where a table has none), so a
problem names the table and the row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from server.backup.errors import BackupError, problems_of
from server.backup.knowledge import Progress
from server.backup.manifest import (
    FORMAT_VERSION,
    Rows,
    canonical,
    compare_tables,
    digest,
    tables_entry,
)

DATABASE_FILE: Final = "database.sqlite3"
#: Pages copied per step of the online backup (4 MiB with SQLite's default 4 KiB pages).
STEP_PAGES: Final = 1024


def snapshot(
    source: Path, target: Path, progress: Progress, step_pages: int = STEP_PAGES
) -> datetime:
    """Copy the live database at `source` into the new file `target` (blocking).

    Returns the wall-clock time just before the copy's read transaction began:
    every transaction committed before it is in the copy.
    """
    if not source.exists():
        raise BackupError(f"SQLite database {source}: not found (is SCRIPTGEN_DATA_DIR right?)")

    def copied(_: int, remaining: int, total: int) -> None:
        progress(f"database: {total - remaining} of {total} pages copied")

    with (
        closing(sqlite3.connect(source)) as live,
        closing(sqlite3.connect(target)) as copy,
    ):
        before = datetime.now(UTC)
        # The read transaction is held across every step: each step reads the same
        # snapshot, and writes committed meanwhile (to the WAL) never restart the copy.
        live.execute("BEGIN")
        live.execute("SELECT count(*) FROM sqlite_master").fetchone()
        live.backup(copy, pages=step_pages, progress=copied)
        live.rollback()
        # The copy is a standalone file: no -wal/-shm beside it.
        copy.execute("PRAGMA journal_mode=DELETE")
    return before


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(connection: sqlite3.Connection) -> list[str]:
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " ORDER BY name"
    ).fetchall()
    return [str(row[0]) for row in rows]


def _key(connection: sqlite3.Connection, table: str) -> list[str]:
    """The columns of `table`'s primary key, in key order; `rowid` when it has none."""
    columns = connection.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
    key = sorted((int(c[5]), str(c[1])) for c in columns if int(c[5]) > 0)
    return [name for _, name in key] or ["rowid"]


def _value(value: object) -> object:
    # Blobs tagged, so a blob never digests like the text of its hex.
    return {"blob": value.hex()} if isinstance(value, bytes) else value


def _rows(connection: sqlite3.Connection, table: str, key: list[str]) -> list[tuple[str, str]]:
    """Each row's (digest of its values, its key as canonical JSON)."""
    selected = ", ".join(_quote(column) for column in key)
    found: list[tuple[str, str]] = []
    for row in connection.execute(f"SELECT {selected}, * FROM {_quote(table)}"):
        values = [_value(value) for value in row]
        found.append((digest(values[len(key) :]), canonical(values[: len(key)]).decode()))
    return found


def _format_1_digest(connection: sqlite3.Connection, table: str) -> dict[str, Any]:
    """A table's entry as format 1 wrote it: its row count and one digest of all its rows."""
    rows = connection.execute(f"SELECT * FROM {_quote(table)}").fetchall()
    encoded = [[v.hex() if isinstance(v, bytes) else v for v in row] for row in rows]
    encoded.sort(key=canonical)
    return {"rows": len(rows), "sha256": digest(encoded)}


@contextmanager
def _sound(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a database that passed `PRAGMA integrity_check`.

    A database error while reading it (a damaged page, a column the manifest
    names that is not there) becomes a BackupError naming the file.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        try:
            result = [str(row[0]) for row in connection.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as error:
            raise BackupError(f"{path.name}: not a sound SQLite database: {error}") from None
        if result != ["ok"]:
            raise BackupError(
                f"{path.name}: PRAGMA integrity_check failed: {'; '.join(result[:5])}"
            )
        try:
            yield connection
        except sqlite3.DatabaseError as error:
            raise BackupError(f"{path.name}: not a sound SQLite database: {error}") from None


def describe(path: Path) -> dict[str, Any]:
    """Integrity check, and per table its row count and a digest per row (blocking)."""
    with _sound(path) as connection:
        rows: Rows = {}
        keys: dict[str, list[str]] = {}
        for table in _tables(connection):
            keys[table] = _key(connection, table)
            rows[table] = _rows(connection, table, keys[table])
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        schema = schema_version_of(connection)
    described: dict[str, Any] = {"user_version": int(version), "tables": tables_entry(rows, keys)}
    if schema is not None:
        described["schema_version"] = schema
    return described


def schema_version_of(connection: sqlite3.Connection) -> int | None:
    """The newest migration applied to a database, or None when it has none."""
    if not connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone():
        return None
    newest = connection.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    return None if newest is None else int(newest)


def schema_version(path: Path) -> int | None:
    """The newest migration applied to the backed-up database at `path` (blocking)."""
    with _sound(path) as connection:
        return schema_version_of(connection)


def check(path: Path, expected: dict[str, Any], version: int = FORMAT_VERSION) -> list[str]:
    """Problems of the backed-up database against its manifest entry (blocking).

    `version` is the manifest's format: format 1 kept one digest per table.
    """
    want: dict[str, Any] = expected.get("tables", {})
    try:
        if version == 1:
            with _sound(path) as connection:
                found = {
                    table: _format_1_digest(connection, table) for table in _tables(connection)
                }
            return _check_format_1(path.name, found, want)
        rows: Rows = {}
        with _sound(path) as connection:
            for table in _tables(connection):
                # Rows named by the key the manifest names them by.
                key = want.get(table, {}).get("key") or _key(connection, table)
                rows[table] = _rows(connection, table, key)
    except BackupError as error:
        return problems_of(error)
    return compare_tables(path.name, rows, want)


def _check_format_1(name: str, found: dict[str, Any], want: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for table in sorted(set(want) | set(found)):
        if table not in found:
            problems.append(f"{name}: table {table!r} is missing")
        elif table not in want:
            problems.append(f"{name}: table {table!r} is not in the manifest")
        elif found[table] != want[table]:
            problems.append(
                f"{name}: table {table!r} holds {found[table]['rows']} rows"
                f" whose digest differs from the manifest's ({want[table]['rows']} rows)"
            )
    return problems
