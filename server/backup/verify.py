"""`verify_backup`: prove a backup whole before anybody relies on it.

In order: the manifest's own digest; every file present, of its size and
SHA-256; then per store, the deep checks — SQLite `PRAGMA integrity_check`
and a digest per row, keyed by its primary key; for PostgreSQL,
`pg_restore --list` parses the archive and every row read back from it
(`pg_restore --data-only`) has its digest; a digest per Redis key (value and
expiry); a digest per Chroma record and the counts, and a trial
restore of story knowledge into a throwaway embedded Chroma where the
similarity probe must return the ids it returned at backup time. Every problem
is collected, each naming its file or record, and reported together.

The backup is read under a shared lock (`folders.reading`), so `prune` does
not remove it meanwhile. A full verification that passes is recorded in
`verified.json` (`verification`), which `prune` counts on.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from server.backup import folders, knowledge, sqlite, verification
from server.backup.errors import BackupError, problems_of
from server.backup.knowledge import Progress
from server.backup.manifest import MANIFEST_FILE, Manifest, file_sha256, read_manifest
from server.backup.stores import chroma_client


def _quiet(_: str) -> None:
    """Progress nobody listens to."""


def check_files(folder: Path, manifest: Manifest) -> tuple[list[str], set[str]]:
    """Problems with the files themselves, and the names of the damaged ones."""
    problems: list[str] = []
    damaged: set[str] = set()
    files: dict[str, Any] = manifest.get("files", {})
    for name, entry in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif (size := path.stat().st_size) != entry["bytes"]:
            what = "truncated" if size < entry["bytes"] else "grown"
            problems.append(f"{path}: {what}: {size} bytes, the manifest says {entry['bytes']}")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{path}: SHA-256 mismatch: the file was altered or damaged")
        else:
            continue
        damaged.add(name)
    for store, described in sorted(manifest.get("stores", {}).items()):
        name = described.get("file")
        if name and name not in files:
            problems.append(f"{folder / name}: the {store} file is not in the manifest")
            damaged.add(name)
    for path in sorted(folder.iterdir()):
        if path.name == MANIFEST_FILE or verification.is_record(path.name):
            continue
        if path.name not in files:
            problems.append(f"{path}: not in the manifest")
    return problems, damaged


def _knowledge_trial(source: Path, entries: list[dict[str, Any]], progress: Progress) -> list[str]:
    with (
        tempfile.TemporaryDirectory(prefix="scriptgen-verify-") as scratch,
        chroma_client("", Path(scratch)) as client,
    ):
        try:
            knowledge.load(client, entries, source, progress)
        except BackupError as error:
            return problems_of(error)
        return knowledge.check_restored(client, entries, source)


async def verify_backup(
    folder: Path, progress: Progress = _quiet, *, knowledge_trial: bool = True
) -> Manifest:
    """The manifest of the sound backup in `folder`; BackupError listing every problem.

    `knowledge_trial=False` skips the trial restore of story knowledge (restore
    itself makes the same checks on the real restore); only a full verification
    is recorded in `verified.json`.
    """
    with folders.reading(folder):
        manifest = await _verify(folder, progress, knowledge_trial)
        if knowledge_trial:
            await asyncio.to_thread(_record, folder, manifest, progress)
    return manifest


def _record(folder: Path, manifest: Manifest, progress: Progress) -> None:
    try:
        verification.record_verified(folder, manifest)
    except OSError as error:
        # A backup on a read-only medium still verifies; prune just cannot count it.
        progress(
            f"verify: cannot write {folder / verification.VERIFIED_FILE} ({error}):"
            " prune will not count this backup as verified"
        )


async def _verify(folder: Path, progress: Progress, knowledge_trial: bool) -> Manifest:
    manifest = read_manifest(folder)
    progress(f"verify: checksums of {len(manifest.get('files', {}))} files")
    problems, damaged = await asyncio.to_thread(check_files, folder, manifest)
    stores: dict[str, Any] = manifest.get("stores", {})
    database = stores.get("database")
    if database and database.get("file") not in damaged:
        progress("verify: database")
        if database.get("kind") == "sqlite":
            problems += await asyncio.to_thread(
                sqlite.check, folder / database["file"], database, manifest["format"]
            )
        else:
            from server.backup import postgres

            problems += await postgres.check(folder / database["file"], database)
    described = stores.get("knowledge")
    if described and described.get("file") not in damaged:
        progress("verify: knowledge records")
        source = folder / described["file"]
        found = await asyncio.to_thread(knowledge.check_file, source, described["collections"])
        problems += found
        if knowledge_trial and not found:
            progress("verify: knowledge trial restore and similarity probe")
            problems += await asyncio.to_thread(
                _knowledge_trial, source, described["collections"], progress
            )
    keys = stores.get("redis")
    if keys and keys.get("file") not in damaged:
        from server.backup import redis_keys

        progress("verify: Redis keys")
        problems += await asyncio.to_thread(
            redis_keys.check_file, folder / keys["file"], keys, manifest["format"]
        )
    if problems:
        count = f"{len(problems)} problem" + "s" * (len(problems) != 1)
        raise BackupError(f"backup {folder} failed verification ({count})", tuple(problems))
    progress(f"verify: {folder} is sound")
    return manifest
