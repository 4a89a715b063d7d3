"""The manifest of a backup: what it holds, how many of each, and a digest of everything.

`manifest.json` names every file of the backup with its size and SHA-256, the
versions that wrote it, and per store its counts and record digests. The
manifest carries a digest of itself (`manifest_sha256`, over its canonical JSON
without that field), so an edited manifest is caught like an edited file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from server.backup.errors import BackupError

MANIFEST_FILE: Final = "manifest.json"
#: Bumped when the layout of a backup changes; restore refuses formats it does not know.
FORMAT_VERSION: Final = 1
_CHUNK: Final = 1024 * 1024

#: A manifest as JSON: plain dicts, lists, strings and numbers.
Manifest = dict[str, Any]


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
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(
            f"{path}: backup format {manifest.get('format')!r} is not {FORMAT_VERSION};"
            " use the scriptgen version that wrote it"
        )
    return manifest
