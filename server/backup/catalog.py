"""The backups in a folder: listed newest first (from their manifests only), and pruned.

`list_backups` hides the hidden folders of backups being written (or left by
interrupted runs) and being removed; `unfinished` names the former.

`prune_backups` counts only backups whose last full `verify` passed
(`verified.json`): it keeps the newest `keep` of them, and never removes the
newest. A backup not verified is removed only when older than the newest
verified one (a newer one may be being verified right now). Each backup is
removed under its exclusive lock (one that a verify or restore reads is left
for the next prune), renamed first to its pruning name: an interrupted prune
leaves no half-removed backup in the list, and the next prune finishes it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from server.backup import folders, verification
from server.backup.errors import BackupError
from server.backup.manifest import MANIFEST_FILE, read_manifest


@dataclass(frozen=True, slots=True)
class BackupSummary:
    """One backup as `backup list` shows it (from its manifest; not verified by reading it)."""

    path: Path
    created: str
    bytes: int
    #: What each store holds: rows, records or keys.
    counts: dict[str, int]
    #: Why the manifest cannot be read, or empty.
    problem: str = ""
    #: When its last full `verify` passed (`verified.json`), or empty.
    verified: str = ""


@dataclass(frozen=True, slots=True)
class Pruned:
    """What `prune_backups` did; each list newest first."""

    removed: list[BackupSummary] = field(default_factory=list)
    #: To be removed, but a verify, restore or another prune held them (or removed them first).
    held: list[BackupSummary] = field(default_factory=list)
    #: The newest verified backup (always kept), or None: then nothing was removed.
    newest_verified: BackupSummary | None = None
    #: Folders an interrupted prune had renamed but not removed, removed now.
    finished: list[Path] = field(default_factory=list)


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
    verified = verification.verified_at(folder, manifest)
    return BackupSummary(folder, str(manifest.get("created", "")), size, counts, verified=verified)


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


def prune_backups(root: Path, keep: int) -> Pruned:
    """Remove all but the newest `keep` verified backups of `root` (see the module's text).

    Only backups whose manifest reads are counted or removed: a folder whose
    manifest is damaged is left for a person to look at.
    """
    if keep < 1:
        raise BackupError(f"keep {keep}: at least the newest backup must be kept")
    listed = list_backups(root)
    finished = folders.finish_pruning(root)
    sound = [s for s in listed if not s.problem and not s.path.is_symlink()]
    verified = [s for s in sound if s.verified]
    if not verified:
        return Pruned(finished=finished)
    kept = {s.path for s in verified[:keep]}
    # Unverified backups newer than the newest verified one may be being verified now.
    older = sound[sound.index(verified[0]) + 1 :]
    doomed = [s for s in older if s.path not in kept]
    removed: list[BackupSummary] = []
    held: list[BackupSummary] = []
    for summary in doomed:
        if folders.remove_backup(summary.path, secrets.token_hex(4)):
            removed.append(summary)
        else:
            held.append(summary)
    return Pruned(removed, held, verified[0], finished)
