"""The local key of the one-command start: made once, kept in `<data dir>/local-api-key` (0600).

`scriptgen serve` on a fresh data dir creates an admin key of the `default`
tenant (the tenant of data from before keys, and of a core with auth off),
prints it, and saves it; later starts reuse it, and the CLI's client commands
fall back to it when no --api-key / SCRIPTGEN_API_KEY is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from server.auth import keys
from server.auth.records import ADMIN, DEFAULT_TENANT, READ, WRITE, KeyStore
from server.store.records import now_micros

LOCAL_KEY_FILE: Final = "local-api-key"


def local_key_path(data_dir: Path) -> Path:
    return data_dir / LOCAL_KEY_FILE


def read_local_key(data_dir: Path) -> str | None:
    """The saved local key, if there is one."""
    try:
        text = local_key_path(data_dir).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if keys.parse(text) is not None else None


async def ensure_local_key(store: KeyStore, data_dir: Path) -> tuple[str, Path, bool]:
    """The local key, its file, and whether it was just created (the store is open)."""
    path = local_key_path(data_dir)
    saved = read_local_key(data_dir)
    if saved is not None:
        parsed = keys.parse(saved)
        assert parsed is not None
        record = await store.get_key(parsed[0])
        if record is not None and not record.revoked and keys.matches(record, parsed[1]):
            return saved, path, False
    plaintext, record = keys.new_key(
        DEFAULT_TENANT,
        (READ, WRITE, ADMIN),
        description="local key of scriptgen serve",
        create_time=now_micros(),
    )
    await store.create_key(record)
    _save(path, plaintext)
    return plaintext, path, True


def _save(path: Path, key: str) -> None:
    """Write the key readable by its owner only (0600), replacing an older one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key + "\n")
    os.chmod(path, 0o600)
