"""`list_backups`: the backups in a folder, newest first, read from their manifests only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
