"""Project stores: where projects and their episodes live (SQLite or PostgreSQL)."""

from server.store.base import ProjectStore
from server.store.factory import build_project_store, check_database_url
from server.store.postgres import PostgresProjectStore
from server.store.sqlite import SqliteProjectStore

__all__ = [
    "PostgresProjectStore",
    "ProjectStore",
    "SqliteProjectStore",
    "build_project_store",
    "check_database_url",
]
