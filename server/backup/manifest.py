"""The manifest of a backup: what it holds, how many of each, and a digest of everything.

`manifest.json` names every file of the backup with its size and SHA-256, the
versions that wrote it, and per store its counts and record digests. The
manifest carries a digest of itself (`manifest_sha256`, over its canonical JSON
without that field), so an edited manifest is caught like an edited file.

A project store's tables share one shape (`tables_entry`, checked by
`compare_tables`): per table its row count, a SHA-256 per row, and the digest
of those. SQLite keys each row's digest by its primary key (or rowid), so a
problem names the row; PostgreSQL keeps them as a sorted list (COPY lines
carry no key), and a problem shows the row's first characters — except in
tables holding secrets (`SECRET_TABLES`), whose values no message shows.

Format 2 added SQLite's per-row digests and Redis keys' expiry in their
digests; format 1 backups still verify and restore, with the checks they
were made with.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from server.backup.errors import BackupError

MANIFEST_FILE: Final = "manifest.json"
#: Bumped when the layout of a backup changes; restore refuses formats it does not know.
FORMAT_VERSION: Final = 2
#: Formats this version verifies and restores (1: SQLite digests per table, Redis without expiry).
READABLE_FORMATS: Final = frozenset({1, 2})
_CHUNK: Final = 1024 * 1024

#: A manifest as JSON: plain dicts, lists, strings and numbers.
Manifest = dict[str, Any]
#: Per table, each row's (digest, name): its key when the store has one, else its first characters.
Rows = dict[str, list[tuple[str, str]]]
#: How many rows of each kind of difference a message names.
_NAMED_ROWS: Final = 3
#: Tables whose rows hold secrets (the job-token HMAC key, API key hashes): a message
#: may name their rows by key, never show their values.
SECRET_TABLES: Final = frozenset({"shared_secrets", "api_keys"})


def is_secret(table: str) -> bool:
    """Whether `table` (`name`, or `schema.name`) holds secrets."""
    return table.rpartition(".")[2].strip('"') in SECRET_TABLES


def canonical(value: object) -> bytes:
    """The one JSON encoding digests are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: object) -> str:
    """SHA-256 of `value`'s canonical JSON, in hex."""
    return hashlib.sha256(canonical(value)).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, in hex."""
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def describe_file(path: Path) -> dict[str, Any]:
    """The manifest entry of one file: its size and SHA-256."""
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def tables_entry(rows: Rows, keys: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """The manifest's `tables`: per table its row count, row digests and their digest.

    With `keys` (per table, the columns naming a row), `records` maps each row's
    name to its digest and `key` lists those columns; without, `records` is the
    sorted list of digests.
    """
    entry: dict[str, Any] = {}
    for table, found in sorted(rows.items()):
        digests = sorted(d for d, _ in found)
        described: dict[str, Any] = {"rows": len(digests), "sha256": digest(digests)}
        if keys is None:
            described["records"] = digests
        else:
            described["key"] = list(keys[table])
            described["records"] = dict(sorted((name, d) for d, name in found))
        entry[table] = described
    return entry


def _named(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMED_ROWS])
    return shown + (f" and {len(names) - _NAMED_ROWS} more" if len(names) > _NAMED_ROWS else "")


def _compare_keyed(where: str, table: str, found: list[tuple[str, str]], want: Any) -> list[str]:
    expected: dict[str, str] = want["records"]
    rows = {name: d for d, name in found}
    key = "row (" + ", ".join(want.get("key", [])) + ")"
    altered = sorted(n for n in rows.keys() & expected.keys() if rows[n] != expected[n])
    lost = sorted(expected.keys() - rows.keys())
    extra = sorted(rows.keys() - expected.keys())
    problems: list[str] = []
    for names, what in (
        (altered, "altered (digest differs from the manifest's)"),
        (lost, "missing"),
        (extra, "not in the manifest"),
    ):
        if names:
            problems.append(f"{where}: table {table!r}: {key} = {_named(names)}: {what}")
    return problems


def _compare_listed(where: str, table: str, found: list[tuple[str, str]], want: Any) -> list[str]:
    expected = Counter(want.get("records") or [])
    digests = Counter(d for d, _ in found)
    if digests == expected:
        return []
    lost, extra = expected - digests, digests - expected
    problem = (
        f"{where}: table {table!r} holds {len(found)} rows, the manifest"
        f" {want['rows']}: {lost.total()} records missing,"
        f" {extra.total()} altered or not in the manifest"
    )
    unexpected = next((text for d, text in found if d in extra), None)
    if unexpected is not None and not is_secret(table):
        problem += f", e.g. the row beginning {unexpected!r}"
    return [problem]


def compare_tables(where: str, rows: Rows, want: Mapping[str, Any]) -> list[str]:
    """Problems of `rows` (read from `where`) against the manifest's `tables`.

    Each names the table, and the rows that differ: by key where the manifest
    keys them, else by their first characters.
    """
    problems: list[str] = []
    for table in sorted(set(want) | set(rows)):
        if table not in rows:
            problems.append(f"{where}: table {table!r} is missing")
            continue
        if table not in want:
            problems.append(f"{where}: table {table!r} is not in the manifest")
            continue
        records = want[table].get("records")
        keyed = isinstance(records, dict)
        digests = sorted(records.values() if keyed else records or [])
        if digest(digests) != want[table]["sha256"] or len(digests) != want[table]["rows"]:
            problems.append(f"{where}: table {table!r}: the manifest's digests disagree")
        compared = _compare_keyed if keyed else _compare_listed
        problems += compared(where, table, rows[table], want[table])
    return problems


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write `manifest` (sealed with its own digest) into `folder`."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    sealed = {**body, "manifest_sha256": digest(body)}
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps(sealed, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: Path) -> Manifest:
    """The manifest of the backup in `folder`; BackupError when missing, unreadable or edited."""
    path = folder / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BackupError(f"{path}: missing — {folder} is not a complete backup") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BackupError(f"{path}: unreadable: {error}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as error:
        raise BackupError(f"{path}: corrupt JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise BackupError(f"{path}: corrupt: not a JSON object")
    sealed = manifest.pop("manifest_sha256", None)
    if sealed != digest(manifest):
        raise BackupError(f"{path}: its digest does not match its content (edited or damaged)")
    if manifest.get("format") not in READABLE_FORMATS:
        readable = ", ".join(str(f) for f in sorted(READABLE_FORMATS))
        raise BackupError(
            f"{path}: backup format {manifest.get('format')!r} is not one this version reads"
            f" ({readable}); use the scriptgen version that wrote it"
        )
    return manifest
