"""Choosing the project store from `database_url`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server import config
from server.store import PostgresProjectStore, SqliteProjectStore, build_project_store
from server.store.factory import sqlite_path


def test_empty_means_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    assert sqlite_path("", tmp_path) == tmp_path / "scriptgen.sqlite3"
    assert isinstance(build_project_store("  ", tmp_path), SqliteProjectStore)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///projects.db", Path("projects.db")),
        ("sqlite:///state/projects.db", Path("state/projects.db")),
        ("sqlite:////var/lib/scriptgen/projects.db", Path("/var/lib/scriptgen/projects.db")),
    ],
)
def test_sqlite_urls_name_a_file(tmp_path: Path, url: str, path: Path) -> None:
    assert sqlite_path(url, tmp_path) == path
    assert isinstance(build_project_store(url, tmp_path), SqliteProjectStore)


@pytest.mark.parametrize(
    "url",
    ["postgresql://scriptgen:secret@db:5432/scriptgen", "postgres://db/scriptgen"],
)
def test_postgres_urls_choose_postgres(tmp_path: Path, url: str) -> None:
    store = build_project_store(url, tmp_path)
    assert isinstance(store, PostgresProjectStore)
    assert "secret" not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://db/scriptgen",
        "redis://localhost:6379/0",
        "sqlite://",
        "sqlite:relative.db",
        "postgresql:db",
        "/just/a/path.db",
    ],
)
def test_anything_else_stops_the_start(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValueError, match="database URL"):
        build_project_store(url, tmp_path)


def test_the_flag_is_checked_when_the_config_is_built() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, {"SCRIPTGEN_DATABASE_URL": "mysql://user:pw@db/x"})
    with pytest.raises(ValueError, match="unsupported database URL") as raised:
        config.from_arguments(parser.parse_args([]))
    assert "pw" not in str(raised.value)
    good = config.from_arguments(parser.parse_args(["--database-url", "postgresql://db/x"]))
    assert good.database_url == "postgresql://db/x"
