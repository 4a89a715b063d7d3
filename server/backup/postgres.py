"""The PostgreSQL project store: pg_dump of one snapshot, its checks, and an all-or-nothing restore.

**Snapshot.** One REPEATABLE READ, READ ONLY transaction exports its snapshot
(`pg_export_snapshot()`); `pg_dump --format=custom --snapshot=…` dumps exactly
that snapshot while, in the same transaction, every table is read with COPY
for its row count and a digest per row. The backup is the database as
committed when the snapshot was taken: every transaction committed before it
is in, none committed after it. The manifest records the wall-clock time
just before it (`snapshot.time`: everything acknowledged before that time is
in the backup), the server's time and its snapshot (`xmin:xmax:xip`).

**Digests.** A row's digest is the SHA-256 of its line in PostgreSQL's COPY
text format (the format pg_dump stores), with the session pinned to UTC,
ISO dates and exact floats. So the same digests come from the live snapshot,
from the archive itself (`pg_restore --data-only --file=-`, no server needed)
and from a restored database. Before the backup is sealed, the archive is
read back once and must give the snapshot's digests (proof that pg_dump
dumped that snapshot). Tables are found in the catalog (every ordinary table
outside the system schemas), never named here.

**Restore** goes into an empty database only (created when missing), with
`pg_restore --single-transaction --exit-on-error`: it commits whole or not at
all. The restored tables must then give the manifest's digests, else they are
dropped again. Objects are owned by the user of SCRIPTGEN_DATABASE_URL
(`--no-owner --no-privileges`), the user the core connects as.

**Progress.** pg_dump and pg_restore run with `--verbose`; each table whose
rows they start on is reported as progress, their other chatter is kept only
to explain a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg

from server.backup import pg_programs
from server.backup.errors import BackupError, problems_of
from server.backup.knowledge import Progress
from server.backup.manifest import Rows, compare_tables, tables_entry
from server.store.postgres import redact

DATABASE_FILE: Final = "database.pgdump"
#: Connection timeout, in seconds.
_CONNECT_SECONDS: Final = 10.0
#: How much of an unexpected row a message shows, to name it.
_SNIPPET: Final = 48
#: Session settings under which COPY writes what pg_dump writes.
_PINNED_OUTPUT: Final = (
    "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"
    " SET extra_float_digits = 3; SET bytea_output = 'hex'; SET client_encoding = 'UTF8'"
)
_USER_NAMESPACE: Final = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
)
#: Every ordinary table pg_dump dumps the data of (extensions' own tables excepted).
_TABLES: Final = f"""
SELECT n.nspname AS schema, c.relname AS name, format('%I.%I', n.nspname, c.relname) AS qualified
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {_USER_NAMESPACE}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3
"""
#: Anything in a database that makes it not empty (at most a few, to name them).
_CONTENTS: Final = f"""
SELECT 'schema ' || quote_ident(n.nspname) FROM pg_namespace n
  WHERE {_USER_NAMESPACE} AND n.nspname <> 'public'
UNION ALL SELECT 'relation ' || format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_NAMESPACE}
UNION ALL SELECT 'routine ' || format('%I.%I', n.nspname, p.proname)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER_NAMESPACE}
UNION ALL SELECT 'type ' || format('%I.%I', n.nspname, t.typname)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE {_USER_NAMESPACE} AND t.typtype IN ('e', 'd', 'r', 'm')
UNION ALL SELECT 'extension ' || quote_ident(extname) FROM pg_extension WHERE extname <> 'plpgsql'
LIMIT 3
"""
#: Drops everything a restore into an empty database created (its undo).
_DROP_EVERYTHING: Final = f"""
DO $$
DECLARE
  drops text[];
  statement text;
BEGIN
  SELECT coalesce(array_agg('DROP SCHEMA IF EXISTS ' || quote_ident(n.nspname)), '{{}}')
    INTO drops FROM pg_namespace n WHERE {_USER_NAMESPACE} AND n.nspname <> 'public';
  drops := drops || (SELECT coalesce(array_agg('DROP EXTENSION IF EXISTS ' || quote_ident(extname)),
    '{{}}') FROM pg_extension WHERE extname <> 'plpgsql');
  drops := drops || (SELECT coalesce(array_agg('DROP ' || CASE c.relkind WHEN 'v' THEN 'VIEW'
      WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
      ELSE 'TABLE' END || ' IF EXISTS ' || format('%I.%I', n.nspname, c.relname)), '{{}}')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f'));
  drops := drops || (SELECT coalesce(array_agg('DROP ROUTINE IF EXISTS '
      || p.oid::regprocedure::text), '{{}}')
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public');
  drops := drops || (SELECT coalesce(array_agg('DROP ' || CASE t.typtype WHEN 'd' THEN 'DOMAIN'
      ELSE 'TYPE' END || ' IF EXISTS ' || format('%I.%I', n.nspname, t.typname)), '{{}}')
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm'));
  FOREACH statement IN ARRAY drops LOOP EXECUTE statement || ' CASCADE'; END LOOP;
END $$
"""
_COPY_HEADER: Final = re.compile(rb"^COPY (.+?)(?: \(.*\))? FROM stdin;\n$")
#: What pg_dump and pg_restore say (with --verbose) as they start on a table's rows.
_TABLE_LINE: Final = re.compile(r": (?:dumping contents of|processing data for) table (.+)$")
#: Lines of a client program's stderr kept for its error message.
_KEPT_LINES: Final = 50

Undo = Callable[[], Awaitable[None]]


def _row(line: bytes) -> tuple[str, str]:
    return hashlib.sha256(line).hexdigest(), line[:_SNIPPET].decode("utf-8", "replace")


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=_CONNECT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise BackupError(f"PostgreSQL at {redact(url)}: cannot connect: {error}") from None


class _LineSink:
    """Receives COPY output in chunks of any size; keeps each row's digest."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._rows: list[tuple[str, str]] = []

    async def __call__(self, chunk: bytes) -> None:
        self._pending.extend(chunk)
        *lines, rest = self._pending.split(b"\n")
        self._rows.extend(_row(bytes(line)) for line in lines)
        self._pending[:] = rest

    def finish(self) -> list[tuple[str, str]]:
        if self._pending:
            self._rows.append(_row(bytes(self._pending)))
        return self._rows


async def read_rows(connection: asyncpg.Connection) -> Rows:
    """Every table's rows as COPY writes them, digested (in the connection's transaction)."""
    await connection.execute(_PINNED_OUTPUT)
    rows: Rows = {}
    for table in await connection.fetch(_TABLES):
        sink = _LineSink()
        await connection.copy_from_table(
            table["name"], schema_name=table["schema"], output=sink, format="text"
        )
        rows[str(table["qualified"])] = sink.finish()
    return rows


def archive_rows(path: Path) -> Rows:
    """Every table's rows in a custom-format archive (`pg_restore --data-only`), blocking."""
    restore = pg_programs.program("pg_restore")
    rows: Rows = {}
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [restore.path, "--data-only", "--file=-", str(path)],
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert process.stdout is not None
        table: list[tuple[str, str]] | None = None
        with process.stdout:
            for line in process.stdout:
                if table is not None:
                    if line == b"\\.\n":
                        table = None
                    else:
                        table.append(_row(line.removesuffix(b"\n")))
                elif header := _COPY_HEADER.match(line):
                    table = rows.setdefault(header.group(1).decode("utf-8", "replace"), [])
        if process.wait() != 0:
            errors.seek(0)
            raise pg_programs.failure(f"{path.name}: pg_restore", errors.read())
    return rows


def check_archive(path: Path, described: dict[str, Any]) -> list[str]:
    """Problems of an archive against its manifest entry: it parses, and every row's digest."""
    try:
        # pg_restore reads archives of its own major version and older only.
        pg_programs.program("pg_restore", archive_version=described.get("pg_dump_version", ""))
        listing = pg_programs.archive_list(path)
        rows = archive_rows(path)
    except BackupError as error:
        return problems_of(error)
    problems = []
    if not any("TABLE DATA" in line for line in listing) and described.get("tables"):
        problems.append(f"{path.name}: pg_restore --list shows no table data")
    return problems + compare_tables(path.name, rows, described.get("tables", {}))


async def check(path: Path, described: dict[str, Any]) -> list[str]:
    """Problems of the backed-up archive against its manifest entry."""
    return await asyncio.to_thread(check_archive, path, described)


async def _run(
    what: str, command: list[str], environment: dict[str, str], progress: Progress
) -> None:
    """Run a client program (given `--verbose`), reporting each table it reaches as progress."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment,
    )
    assert process.stderr is not None
    said: deque[str] = deque(maxlen=_KEPT_LINES)
    tables = 0
    try:
        async for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if found := _TABLE_LINE.search(line):
                tables += 1
                progress(f"database: {what}: table {found.group(1)} ({tables})")
            else:
                said.append(line)
        await process.wait()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        # The error, and what follows it (the failed command), not the verbose chatter before.
        lines = list(said)
        first = next((i for i, line in enumerate(lines) if "error:" in line), 0)
        raise pg_programs.failure(what, "\n".join(lines[first:]))


async def dump(url: str, staging: Path, progress: Progress) -> dict[str, Any]:
    """Dump one snapshot of the database into `staging`; its manifest entry."""
    target = staging / DATABASE_FILE
    libpq_url, environment = pg_programs.libpq(url)
    connection = await _connect(url)
    try:
        server = connection.get_server_version()
        pg_dump = pg_programs.program("pg_dump", server.major)
        progress(f"database: PostgreSQL {server.major}.{server.minor} at {redact(url)}")
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            before = datetime.now(UTC)
            # The transaction's first statement: its snapshot is the backup's point in time.
            taken = await connection.fetchrow(
                "SELECT pg_export_snapshot() AS id, clock_timestamp() AS time,"
                " pg_current_snapshot()::text AS transactions"
            )
            assert taken is not None
            progress(f"database: snapshot {taken['id']}; pg_dump {pg_dump.version} and digests")
            schema = await _schema_version(connection)
            command = [
                pg_dump.path,
                "--format=custom",
                "--verbose",
                f"--snapshot={taken['id']}",
                f"--file={target}",
                f"--dbname={libpq_url}",
            ]
            _, rows = await asyncio.gather(
                _run("pg_dump", command, environment, progress), read_rows(connection)
            )
    finally:
        await connection.close()
    tables = tables_entry(rows)
    progress(f"database: {len(tables)} tables, {sum(t['rows'] for t in tables.values())} rows")
    problems = await check(target, {"tables": tables})
    if problems:
        raise BackupError("pg_dump's archive differs from the snapshot", tuple(problems))
    described: dict[str, Any] = {
        "kind": "postgresql",
        "file": DATABASE_FILE,
        "server_version": f"{server.major}.{server.minor}",
        "pg_dump_version": pg_dump.version,
        "snapshot": {
            "time": before.isoformat(timespec="microseconds"),
            "server_time": taken["time"].astimezone(UTC).isoformat(timespec="microseconds"),
            "transactions": str(taken["transactions"]),
            "method": "REPEATABLE READ transaction, pg_export_snapshot + pg_dump --snapshot",
        },
        "tables": tables,
    }
    if schema is not None:
        described["schema_version"] = schema
    return described


async def _schema_version(connection: asyncpg.Connection) -> int | None:
    """The newest migration applied to the database (in the snapshot), or None."""
    if await connection.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return None
    newest = await connection.fetchval("SELECT max(version) FROM schema_migrations")
    return None if newest is None else int(newest)


def archive_schema_version(path: Path) -> int | None:
    """The newest migration in an archive's `schema_migrations` rows, or None (blocking).

    For manifests written before they recorded it.
    """
    restore = pg_programs.program("pg_restore")
    answer = subprocess.run(
        [restore.path, "--data-only", "--table=schema_migrations", "--file=-", str(path)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    if answer.returncode != 0:
        raise pg_programs.failure(f"{path.name}: pg_restore", answer.stderr)
    versions: list[int] = []
    inside = False
    for line in answer.stdout.splitlines():
        if inside and line == b"\\.":
            inside = False
        elif inside:
            versions.append(int(line.split(b"\t", 1)[0]))
        elif _COPY_HEADER.match(line + b"\n"):
            inside = True
    return max(versions, default=None)


async def _contents(url: str) -> list[str]:
    connection = await _connect(url)
    try:
        return [str(row[0]) for row in await connection.fetch(_CONTENTS)]
    finally:
        await connection.close()


async def _create_if_missing(url: str) -> bool:
    """Create the database `url` names when it does not exist; whether it was created."""
    try:
        connection = await asyncpg.connect(url, timeout=_CONNECT_SECONDS)
    except asyncpg.InvalidCatalogNameError:
        pass
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise BackupError(f"PostgreSQL at {redact(url)}: cannot connect: {error}") from None
    else:
        await connection.close()
        return False
    admin = await _connect(pg_programs.with_database(url, "postgres"))
    try:
        name = pg_programs.database_name(url)
        await admin.execute(f"CREATE DATABASE {_quote(name)}")
    finally:
        await admin.close()
    return True


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _undo(url: str, created: bool) -> Undo:
    async def undo() -> None:
        if created:
            admin = await _connect(pg_programs.with_database(url, "postgres"))
            try:
                name = _quote(pg_programs.database_name(url))
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            finally:
                await admin.close()
            return
        connection = await _connect(url)
        try:
            await connection.execute(_DROP_EVERYTHING)
        finally:
            await connection.close()

    return undo


async def restore(path: Path, described: dict[str, Any], url: str, progress: Progress) -> Undo:
    """Restore the archive into the empty database `url` names; returns how to undo it."""
    created = await _create_if_missing(url)
    undo = _undo(url, created)
    try:
        found = await _contents(url)
        if found:
            raise BackupError(
                f"PostgreSQL database {pg_programs.database_name(url)!r} at {redact(url)} is not"
                f" empty (it holds {', '.join(found)}); restore needs an empty database"
            )
        connection = await _connect(url)
        try:
            server_major = connection.get_server_version().major
        finally:
            await connection.close()
        pg_restore = pg_programs.program(
            "pg_restore", server_major, archive_version=described.get("pg_dump_version", "")
        )
        libpq_url, environment = pg_programs.libpq(url)
        progress(f"database: pg_restore {pg_restore.version} into {redact(url)}")
        command = [
            pg_restore.path,
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-privileges",
            "--verbose",
            f"--dbname={libpq_url}",
            str(path),
        ]
        await _run("pg_restore", command, environment, progress)
    except BaseException:
        if created:
            await undo()
        raise
    try:
        connection = await _connect(url)
        try:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                rows = await read_rows(connection)
        finally:
            await connection.close()
        where = f"database {pg_programs.database_name(url)!r}"
        problems = compare_tables(where, rows, described["tables"])
        if problems:
            raise BackupError("the restored database differs from the backup", tuple(problems))
    except BaseException:
        await undo()
        raise
    progress(f"database: {sum(len(r) for r in rows.values())} rows restored and proven equal")
    return undo
