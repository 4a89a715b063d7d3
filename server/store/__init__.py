"""Project stores: where projects and their episodes live (SQLite now; PostgreSQL next)."""

from server.store.base import ProjectStore
from server.store.sqlite import SqliteProjectStore

__all__ = ["ProjectStore", "SqliteProjectStore"]
