"""Choose the project store from a database URL.

| `database_url`                       | store                                     |
|--------------------------------------|-------------------------------------------|
| empty                                | SQLite at `<data_dir>/scriptgen.sqlite3`  |
| `sqlite:///relative/path.sqlite3`    | SQLite at that path (relative to the cwd) |
| `sqlite:////absolute/path.sqlite3`   | SQLite at that absolute path              |
| `postgresql://user:pw@host:5432/db`  | PostgreSQL (`postgres://` works too)      |

Anything else is a ValueError, raised when the configuration is built, so a
mistyped URL stops the core at start instead of at the first request.
"""

from __future__ import annotations

from pathlib import Path

from server.store.base import ProjectStore
from server.store.postgres import PostgresProjectStore, redact
from server.store.sqlite import SqliteProjectStore

SQLITE_FILE_NAME = "scriptgen.sqlite3"
_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def sqlite_path(database_url: str, data_dir: Path) -> Path | None:
    """The SQLite file `database_url` names, or None when it names PostgreSQL.

    Raises ValueError when the URL names neither.
    """
    url = database_url.strip()
    if not url:
        return data_dir / SQLITE_FILE_NAME
    scheme = url.partition(":")[0].lower()
    if scheme in _POSTGRES_SCHEMES:
        if not url.partition(":")[2].startswith("//"):
            raise ValueError(f"database URL {redact(url)!r} must look like {scheme}://host/db")
        return None
    if scheme == "sqlite":
        path = url[len(_SQLITE_PREFIX) :] if url.startswith(_SQLITE_PREFIX) else ""
        if not path:
            raise ValueError(
                f"database URL {url!r} must look like sqlite:///relative/path"
                " or sqlite:////absolute/path"
            )
        return Path(path)
    raise ValueError(
        f"unsupported database URL {redact(url)!r}: use sqlite:///path,"
        " postgresql://user:password@host:port/database, or nothing for SQLite in the data dir"
    )


def check_database_url(database_url: str) -> None:
    """Raise ValueError when `database_url` names no store this core can open."""
    sqlite_path(database_url, Path())


def build_project_store(database_url: str, data_dir: Path) -> ProjectStore:
    """The store `database_url` names (see the module docs); not yet opened."""
    path = sqlite_path(database_url, data_dir)
    if path is None:
        return PostgresProjectStore(database_url.strip())
    return SqliteProjectStore(path)
