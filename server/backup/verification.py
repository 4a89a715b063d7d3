"""The record that a backup passed a full `verify`: `verified.json`, beside its manifest.

`prune` counts only verified backups among those it keeps, so a night whose
verify failed cannot push the last good backups out. The record names the
manifest it vouches for by its digest: a record copied into another backup,
or left beside a manifest written since, vouches for nothing. It is not one
of the backup's checksummed files (verification writes it after checking
them), it is written under a temporary name, fsynced, and renamed into place,
so it is whole or absent.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from server.backup import folders
from server.backup.manifest import Manifest, digest

VERIFIED_FILE: Final = "verified.json"
#: The temporary names `verified.json` is written under (one may outlive a crash).
_WRITING: Final = re.compile(r"^\.verified\.json\.[0-9a-f]{8}$")


def is_record(name: str) -> bool:
    """Whether a file named `name` in a backup folder is the verification record (or one
    being written), not one of the backup's files."""
    return name == VERIFIED_FILE or bool(_WRITING.match(name))


def record_verified(folder: Path, manifest: Manifest) -> Path:
    """Record that the backup in `folder`, described by `manifest`, passed verification."""
    when = datetime.now(UTC).isoformat(timespec="seconds")
    text = json.dumps({"manifest_sha256": digest(manifest), "verified": when}, indent=2) + "\n"
    temporary = folder / f".{VERIFIED_FILE}.{secrets.token_hex(4)}"
    try:
        folders.create_private_file(temporary)
        with temporary.open("w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        temporary.replace(folder / VERIFIED_FILE)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folders.sync_folder(folder)
    return folder / VERIFIED_FILE


def verified_at(folder: Path, manifest: Manifest) -> str:
    """When the backup in `folder` (whose manifest is `manifest`) passed verification, or ""."""
    try:
        record = json.loads((folder / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return ""
    if not isinstance(record, dict) or record.get("manifest_sha256") != digest(manifest):
        return ""
    return str(record.get("verified") or "")
