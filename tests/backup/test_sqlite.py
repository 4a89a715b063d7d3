"""SQLite backups: a digest per row, keyed by primary key (or rowid); a stepped, consistent copy.

A row altered, deleted or added inside the backed-up file (its checksum forged in
the manifest, so only the row digests can tell) is named by table and key, and
restore refuses it. The online backup copies in steps, reporting progress, and
still gives the database as committed when it began. Format 1 backups (one
digest per table) still verify and restore.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from server.backup import (
    BackupError,
    Stores,
    compatibility,
    create_backup,
    read_manifest,
    restore_backup,
    verify_backup,
)
from server.backup import sqlite as sqlite_backup
from server.backup.manifest import (
    FORMAT_VERSION,
    canonical,
    describe_file,
    digest,
    write_manifest,
)
from tests.backup.conftest import Filled

DATABASE = sqlite_backup.DATABASE_FILE


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _key_text(values: list[Any]) -> str:
    """A row key as messages and the manifest show it: compact JSON of the key's values."""
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def _edit(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as connection:
        for statement in statements:
            connection.execute(statement)
        connection.commit()


def _forge(backup: Path, manifest: dict[str, Any]) -> None:
    """Make the file checks pass: the altered file's size and SHA-256 in the manifest."""
    manifest["files"][DATABASE] = describe_file(backup / DATABASE)
    write_manifest(backup, manifest)
    assert read_manifest(backup) == manifest


def _first_project(path: Path) -> tuple[str, str]:
    with closing(sqlite3.connect(path)) as connection:
        row = connection.execute("SELECT tenant, id FROM projects ORDER BY id LIMIT 1").fetchone()
    return str(row[0]), str(row[1])


_ALTER = "UPDATE projects SET title = 'Day Shift' WHERE tenant = '{0}' AND id = '{1}'"
_DELETE = "DELETE FROM projects WHERE tenant = '{0}' AND id = '{1}'"
_ADD = (
    "CREATE TEMP TABLE forged AS SELECT * FROM projects WHERE tenant = '{0}' AND id = '{1}'",
    "UPDATE forged SET id = 'forged'",
    "INSERT INTO projects SELECT * FROM forged",
)


@pytest.mark.parametrize(
    ("statements", "what", "changed"),
    [
        ((_ALTER,), "altered", "{1}"),
        ((_DELETE,), "missing", "{1}"),
        (_ADD, "not in the manifest", "forged"),
    ],
    ids=["altered", "deleted", "added"],
)
async def test_a_changed_row_is_named_by_table_and_key_and_refused(
    filled: Filled, tmp_path: Path, statements: tuple[str, ...], what: str, changed: str
) -> None:
    backup = tmp_path / "b1"
    manifest = await create_backup(backup, filled.stores)
    projects = manifest["stores"]["database"]["tables"]["projects"]
    assert projects["key"] == ["tenant", "id"]
    assert len(projects["records"]) == projects["rows"] == 2
    tenant, project = _first_project(backup / DATABASE)
    _edit(backup / DATABASE, *(s.format(tenant, project) for s in statements))
    assert _names(backup) == ["database.sqlite3", "knowledge.jsonl", "manifest.json"]
    _forge(backup, manifest)

    with pytest.raises(BackupError) as verified:
        await verify_backup(backup)
    key = _key_text([tenant, changed.format(tenant, project)])
    named = f"database.sqlite3: table 'projects': row (tenant, id) = {key}: {what}"
    # Only that row: every other table, and the file checks, pass.
    (problem,) = verified.value.problems
    assert problem.startswith(named), problem

    restored = Stores.from_config(filled.elsewhere(tmp_path / "restored"))
    with pytest.raises(BackupError) as refused:
        await restore_backup(backup, restored)
    assert named in str(refused.value)
    assert _names(tmp_path) == ["b1", "live"]


def _odd_database(path: Path) -> None:
    """A table without a primary key (keyed by rowid), one WITHOUT ROWID, blobs and floats."""
    with closing(sqlite3.connect(path)) as connection:
        connection.executescript(
            """
            CREATE TABLE notes (text TEXT, raw BLOB, weight REAL);
            INSERT INTO notes VALUES ('Mina hums.', x'00ff', 0.1), ('Rain.', NULL, 1e-300),
                                     ('Mina hums.', '00ff', 0.1);
            CREATE TABLE "beat sheet" (act INTEGER, "the beat" TEXT, line TEXT,
                                       PRIMARY KEY ("the beat", act)) WITHOUT ROWID;
            INSERT INTO "beat sheet" VALUES (1, 'hook', 'INT. WARD 9 - NIGHT'),
                                            (2, 'twist', '밤 근무');
            """
        )


def test_rows_are_keyed_by_primary_key_or_rowid(tmp_path: Path) -> None:
    path = tmp_path / DATABASE
    _odd_database(path)
    described = sqlite_backup.describe(path)
    notes, beats = described["tables"]["notes"], described["tables"]["beat sheet"]
    assert notes["key"] == ["rowid"]
    assert sorted(notes["records"]) == ["[1]", "[2]", "[3]"]
    assert beats["key"] == ["the beat", "act"]  # in key order, not column order
    assert sorted(beats["records"]) == [_key_text(["hook", 1]), _key_text(["twist", 2])]
    assert notes["sha256"] == digest(sorted(notes["records"].values()))
    # A blob never digests like the text of its hex.
    assert notes["records"]["[1]"] != notes["records"]["[3]"]
    # A SHA-256 in hex per row, as PostgreSQL's rows have: the manifest stays small.
    assert all(len(d) == 64 for d in [*notes["records"].values(), *beats["records"].values()])
    assert sqlite_backup.check(path, described) == []

    _edit(path, "UPDATE notes SET weight = 0.2 WHERE rowid = 1")
    _edit(path, "UPDATE \"beat sheet\" SET line = 'EXT. ROOF' WHERE act = 2")
    assert sqlite_backup.check(path, described) == [
        f"{DATABASE}: table 'beat sheet': row (the beat, act) = {_key_text(['twist', 2])}:"
        " altered (digest differs from the manifest's)",
        f"{DATABASE}: table 'notes': row (rowid) = [1]: altered (digest differs from the"
        " manifest's)",
    ]


def test_the_stepped_copy_is_one_snapshot_while_writers_write(tmp_path: Path) -> None:
    """A write committed between two steps of the copy is not in it (and does not restart it)."""
    live, copy = tmp_path / "live.sqlite3", tmp_path / "copy.sqlite3"
    with closing(sqlite3.connect(live)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE scenes (id INTEGER PRIMARY KEY, text TEXT)")
        connection.executemany(
            "INSERT INTO scenes (text) VALUES (?)", [("INT. WARD 9 - NIGHT " * 50,)] * 200
        )
        connection.commit()
    progress: list[str] = []

    def write_meanwhile(line: str) -> None:
        progress.append(line)
        if len(progress) == 1:
            _edit(live, "INSERT INTO scenes (text) VALUES ('written during the copy')")

    sqlite_backup.snapshot(live, copy, write_meanwhile, step_pages=8)

    assert len(progress) > 5
    assert progress[-1].startswith("database: ") and progress[-1].endswith("pages copied")
    copied = [int(line.split()[1]) for line in progress]
    assert copied == sorted(copied), "the copy restarted"
    with closing(sqlite3.connect(copy)) as connection:
        assert connection.execute("SELECT count(*) FROM scenes").fetchone() == (200,)
    with closing(sqlite3.connect(live)) as connection:
        assert connection.execute("SELECT count(*) FROM scenes").fetchone() == (201,)
    assert not (tmp_path / "copy.sqlite3-wal").exists()


async def test_create_reports_the_copy_as_progress(filled: Filled, tmp_path: Path) -> None:
    progress: list[str] = []
    manifest = await create_backup(tmp_path / "b1", filled.stores, progress.append)
    copied = [line for line in progress if line.endswith("pages copied")]
    assert copied, progress
    assert (
        "in steps, inside one read transaction"
        in manifest["stores"]["database"]["snapshot"]["method"]
    )


def _as_format_1(backup: Path, manifest: dict[str, Any]) -> None:
    """Rewrite a backup's manifest as format 1 wrote it: one digest per SQLite table."""
    with closing(sqlite3.connect(backup / DATABASE)) as connection:
        for table, entry in manifest["stores"]["database"]["tables"].items():
            quoted = '"' + table.replace('"', '""') + '"'
            rows = connection.execute(f"SELECT * FROM {quoted}").fetchall()
            encoded = [[v.hex() if isinstance(v, bytes) else v for v in row] for row in rows]
            encoded.sort(key=canonical)
            entry.clear()
            entry.update(rows=len(rows), sha256=digest(encoded))
    manifest["format"] = 1
    write_manifest(backup, manifest)


async def test_a_format_1_backup_still_verifies_and_restores(
    filled: Filled, tmp_path: Path
) -> None:
    backup = tmp_path / "b1"
    manifest = await create_backup(backup, filled.stores)
    assert manifest["format"] == FORMAT_VERSION == 2
    _as_format_1(backup, manifest)
    assert (await verify_backup(backup))["format"] == 1
    await restore_backup(backup, Stores.from_config(filled.elsewhere(tmp_path / "restored")))

    # Its checks still catch an altered row (by table, as format 1 could).
    tenant, project = _first_project(backup / DATABASE)
    _edit(backup / DATABASE, _ALTER.format(tenant, project))
    _forge(backup, read_manifest(backup))
    with pytest.raises(BackupError, match=r"table 'projects' holds 2 rows whose digest differs"):
        await verify_backup(backup)


@pytest.mark.parametrize("edit", [lambda m: m.update(format=99), lambda m: m.pop("format")])
async def test_an_unknown_format_gets_a_clear_error(
    filled: Filled, tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    backup = tmp_path / "b1"
    manifest = await create_backup(backup, filled.stores)
    edit(manifest)
    write_manifest(backup, manifest)
    with pytest.raises(BackupError, match=r"is not one this version reads \(1, 2\); use the"):
        await verify_backup(backup)


async def test_a_schema_newer_than_this_scriptgen_is_refused(
    filled: Filled, tmp_path: Path
) -> None:
    """Recorded in the manifest; read from the database itself in manifests without it."""
    backup = tmp_path / "b1"
    manifest = await create_backup(backup, filled.stores)
    ours = compatibility.newest_known("sqlite")
    database = manifest["stores"]["database"]
    assert database["schema_version"] == ours
    restored = Stores.from_config(filled.elsewhere(tmp_path / "restored"))

    database["schema_version"] = ours + 1
    _forge(backup, manifest)
    with pytest.raises(BackupError, match=rf"schema version {ours + 1}, newer than this"):
        await restore_backup(backup, restored)
    assert _names(tmp_path) == ["b1", "live"]

    # An older manifest, without the field, of a database a newer scriptgen migrated.
    del database["schema_version"]
    _edit(
        backup / DATABASE,
        f"INSERT INTO schema_migrations (version, name, applied_time) VALUES ({ours + 2}, 'x', 1)",
    )
    database["tables"] = sqlite_backup.describe(backup / DATABASE)["tables"]
    _forge(backup, manifest)
    await verify_backup(backup)
    with pytest.raises(BackupError, match=rf"schema version {ours + 2}, newer than this"):
        await restore_backup(backup, restored)
    assert _names(tmp_path) == ["b1", "live"]
