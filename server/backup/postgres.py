"""PostgreSQL project store: not backed up by `scriptgen backup` yet.

Until it is (pg_dump in custom format, restored with pg_restore into an empty
database), a configured PostgreSQL store makes create, verify and restore stop
with this message rather than write a backup without the project store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from server.backup.errors import BackupError
from server.backup.knowledge import Progress

_NOT_YET = (
    "PostgreSQL project stores are not backed up by scriptgen yet: use"
    " `pg_dump -Fc` / `pg_restore --single-transaction` (see README, Backups)"
)


async def dump(url: str, staging: Path, progress: Progress) -> dict[str, Any]:
    """Refused for now (see the module docs)."""
    raise BackupError(_NOT_YET)


async def check(path: Path, described: dict[str, Any]) -> list[str]:
    """Refused for now (see the module docs)."""
    return [_NOT_YET]


async def restore(path: Path, url: str, progress: Progress) -> Callable[[], Awaitable[None]]:
    """Refused for now (see the module docs)."""
    raise BackupError(_NOT_YET)
