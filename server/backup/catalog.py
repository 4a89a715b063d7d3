"""The backups in a folder: listed newest first (from their manifests only), and pruned.

`list_backups` hides the `.NAME.partial-…` folders of backups being written
(or left by interrupted runs); `unfinished` names them. `prune_backups`
keeps the newest backups and removes the rest: each is first renamed to a
partial name, so an interrupted prune leaves no half-removed backup in the
list, only a partial folder the next `create` sweeps.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from server.backup import folders
from server.backup.errors import BackupError
from server.backup.manifest import MANIFEST_FILE, read_manifest


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """One backup as `backup list` shows it (from its manifest; not verified)."""

    path: Path
    created: str
    bytes: int
    #: What each store holds: rows, records or keys.
    counts: dict[str, int]
    #: Why the manifest cannot be read, or empty.
    problem: str = ""


def _summary(folder: Path) -> BackupSummary:
    try:
        manifest = read_manifest(folder)
    except BackupError as error:
        return BackupSummary(folder, "", 0, {}, problem=str(error))
    stores = manifest.get("stores", {})
    counts: dict[str, int] = {}
    database = stores.get("database", {})
    if "tables" in database:
        counts["database rows"] = sum(t["rows"] for t in database["tables"].values())
    if "knowledge" in stores:
        counts["knowledge records"] = sum(c["count"] for c in stores["knowledge"]["collections"])
    if "redis" in stores:
        counts["redis keys"] = int(stores["redis"]["count"])
    size = sum(int(entry["bytes"]) for entry in manifest.get("files", {}).values())
    return BackupSummary(folder, str(manifest.get("created", "")), size, counts)


def list_backups(root: Path) -> list[BackupSummary]:
    """Every folder of `root` holding a manifest, newest first (unfinished ones are hidden)."""
    if not root.is_dir():
        raise BackupError(f"{root}: no such folder")
    found = [
        _summary(folder)
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith(".") and (folder / MANIFEST_FILE).exists()
    ]
    return sorted(found, key=lambda summary: (summary.created, summary.path.name), reverse=True)


def unfinished(root: Path) -> list[Path]:
    """The partial backups in `root`: being written, or left by interrupted runs."""
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if folders.is_partial(path) and path.is_dir())


def prune_backups(root: Path, keep: int) -> list[BackupSummary]:
    """Remove all but the newest `keep` backups of `root`; those removed, newest first.

    Only backups whose manifest reads are counted or removed: a folder whose
    manifest is damaged is left for a person to look at.
    """
    if keep < 1:
        raise BackupError(f"keep {keep}: at least the newest backup must be kept")
    sound = [summary for summary in list_backups(root) if not summary.problem]
    removed = sound[keep:]
    for summary in removed:
        doomed = summary.path.with_name(
            folders.partial_name(summary.path.name, secrets.token_hex(4))
        )
        summary.path.rename(doomed)
        shutil.rmtree(doomed)
    return removed
