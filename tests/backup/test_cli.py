"""`scriptgen backup create|verify|list|restore` with the core's own flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scriptgen.cli import run
from scriptgen.v1 import project_pb2

import server.backup
from server.backup import BackupError
from server.backup.errors import SHOWN_PROBLEMS
from server.store.postgres import PostgresProjectStore
from tests.backends.postgres import fresh_database
from tests.backup.conftest import Filled

_ENVIRON = {"SCRIPTGEN_AUTH": "disabled", "SCRIPTGEN_GRPC_ADDRESS": "127.0.0.1:0"}


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


async def test_the_commands_round_trip(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = ["--data-dir", str(filled.config.data_dir)]
    backup = str(tmp_path / "backups" / "b1")
    assert await run(["backup", "create", backup, *live, "--json"], _ENVIRON) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["database_rows"] > 0 and created["knowledge_records"] > 4

    assert await run(["backup", "verify", backup], _ENVIRON) == 0
    assert "verified" in capsys.readouterr().out
    assert await run(["backup", "list", str(tmp_path / "backups")], _ENVIRON) == 0
    assert "b1" in capsys.readouterr().out
    assert await run(["backup", "list", str(tmp_path / "backups"), "--json"], _ENVIRON) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["backup"] == backup
    # The same keys, and counts, as `create --json`.
    for key in ("database_rows", "knowledge_records"):
        assert listed[key] == created[key]
    assert not {key for key in listed if " " in key}

    restored = ["--data-dir", str(tmp_path / "restored")]
    assert await run(["backup", "restore", backup, *restored, "--json"], _ENVIRON) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["restore_seconds"] >= 0
    assert (tmp_path / "restored" / "scriptgen.sqlite3").exists()

    (Path(backup) / "knowledge.jsonl").unlink()
    assert await run(["backup", "verify", backup, "--quiet"], _ENVIRON) == 1
    assert "knowledge.jsonl: missing" in capsys.readouterr().err


async def test_a_postgres_store_round_trips(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fresh_database(postgres_url) as live, fresh_database(postgres_url) as empty:
        store = PostgresProjectStore(live)
        await store.open()
        try:
            await store.create_project("p1", project_pb2.Project(title="Night Shift"))
        finally:
            await store.close()
        backup = str(tmp_path / "b1")
        stores = ["--data-dir", str(tmp_path / "live"), "--database-url", live]
        assert await run(["backup", "create", backup, *stores, "--json"], _ENVIRON) == 0
        created = json.loads(capsys.readouterr().out)
        assert created["database_rows"] > 1  # the project and the schema's migrations
        assert await run(["backup", "verify", backup, "--quiet"], _ENVIRON) == 0

        in_use = [*stores[:2], "--database-url", live]
        assert await run(["backup", "restore", backup, *in_use], _ENVIRON) == 1
        assert "restore needs an empty database" in capsys.readouterr().err
        target = ["--data-dir", str(tmp_path / "restored"), "--database-url", empty]
        assert await run(["backup", "restore", backup, *target, "--json"], _ENVIRON) == 0
        assert json.loads(capsys.readouterr().out)["database_rows"] == created["database_rows"]


async def test_an_error_prints_its_problems_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore that finds 30 differing rows names the first 20, and how many more."""
    problems = tuple(f"table 'projects': row {n}: altered" for n in range(30))

    async def differing(*_: object, **__: object) -> None:
        raise BackupError("the restored database differs from the backup", problems)

    monkeypatch.setattr(server.backup, "restore_backup", differing)
    restored = ["--data-dir", str(tmp_path / "restored")]
    assert await run(["backup", "restore", str(tmp_path / "b1"), *restored], _ENVIRON) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "scriptgen: error: the restored database differs from the backup:"
    assert lines[1:21] == [f"  {problem}" for problem in problems[:SHOWN_PROBLEMS]]
    assert lines[21:] == ["  and 10 more"]


async def test_other_failures_end_in_one_line_not_a_traceback(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = ["--data-dir", str(filled.config.data_dir)]
    # Redis refusing connections: redis.exceptions.ConnectionError, mid-backup.
    unreachable = [*live, "--redis-url", "redis://127.0.0.1:1/0"]
    assert await run(["backup", "create", str(tmp_path / "b1"), *unreachable], _ENVIRON) == 1
    (line,) = capsys.readouterr().err.splitlines()[-1:]
    assert line.startswith("scriptgen: error: backup create failed: ConnectionError: "), line
    # A project store that is not a database: sqlite3.DatabaseError.
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "scriptgen.sqlite3").write_bytes(b"not a database at all" * 300)
    args = ["backup", "create", str(tmp_path / "b2"), "--data-dir", str(garbage), "--quiet"]
    assert await run(args, _ENVIRON) == 1
    assert capsys.readouterr().err.splitlines() == [
        "scriptgen: error: backup create failed: DatabaseError: file is not a database"
    ]
    assert _names(tmp_path) == ["garbage", "live"]


async def test_a_backup_without_story_knowledge_needs_the_flag(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong collection prefix finds no knowledge while the project store has episodes."""
    live = ["--data-dir", str(filled.config.data_dir), "--chroma-collection-prefix", "typo"]
    backup = str(tmp_path / "b1")
    assert await run(["backup", "create", backup, *live, "--quiet"], _ENVIRON) == 1
    said = capsys.readouterr().err
    assert "holds 2 episodes" in said and "collections typo-*" in said
    assert "--allow-empty-knowledge" in said
    assert _names(tmp_path) == ["live"]

    allowed = [*live, "--allow-empty-knowledge", "--json"]
    assert await run(["backup", "create", backup, *allowed], _ENVIRON) == 0
    assert json.loads(capsys.readouterr().out)["knowledge_records"] == 0
