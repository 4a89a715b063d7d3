"""Versioned schema migrations: one folder per SQL dialect of `NNNN_name.sql` files.

Each store applies its dialect's files in order, each once, recording the
version in a `schema_migrations` table. A dialect's numbering is its own, but
the folders move in step: the same version adds the same tables in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

Dialect = Literal["sqlite", "postgres"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step."""

    version: int
    name: str
    sql: str


def migrations(dialect: Dialect) -> list[Migration]:
    """Every migration of `dialect` shipped with the core, oldest first."""
    found = []
    for entry in resources.files(f"{__name__}.{dialect}").iterdir():
        if entry.name.endswith(".sql"):
            version, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(version), name, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def statements(sql: str) -> list[str]:
    """The statements of a migration file (none of ours has a `;` inside a literal)."""
    return [statement for statement in sql.split(";") if statement.strip()]
