"""`prune` and the verification record: only verified backups count, and locks are honoured."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from pathlib import Path

import pytest
from scriptgen.cli import run

from server.backup import (
    BackupError,
    create_backup,
    folders,
    list_backups,
    prune_backups,
    verification,
    verify_backup,
)
from server.backup.knowledge import KNOWLEDGE_FILE
from server.backup.manifest import read_manifest
from tests.backup.conftest import Filled
from tests.backup.damage import flip_byte

_ENVIRON = {"SCRIPTGEN_AUTH": "disabled", "SCRIPTGEN_GRPC_ADDRESS": "127.0.0.1:0"}


def _names(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir())


def _vouch(folder: Path) -> None:
    """Record `folder` as verified, as a passing `verify` does (without its minutes)."""
    verification.record_verified(folder, read_manifest(folder))


async def test_verify_records_a_pass_and_only_a_pass(filled: Filled, tmp_path: Path) -> None:
    good, bad = tmp_path / "b1", tmp_path / "b2"
    await create_backup(good, filled.stores)
    await create_backup(bad, filled.stores)

    await verify_backup(good)
    record = good / verification.VERIFIED_FILE
    assert stat.S_IMODE(record.stat().st_mode) == folders.PRIVATE_FILE
    assert json.loads(record.read_text(encoding="utf-8"))["verified"]
    await verify_backup(good)  # the record is not one of the backup's files
    assert [s.verified != "" for s in list_backups(tmp_path)] == [False, True]

    flip_byte(bad / KNOWLEDGE_FILE)
    with pytest.raises(BackupError, match="failed verification"):
        await verify_backup(bad)
    assert not (bad / verification.VERIFIED_FILE).exists()
    # A record vouches for its own manifest only.
    (bad / verification.VERIFIED_FILE).write_bytes(record.read_bytes())
    (summary,) = [s for s in list_backups(tmp_path) if s.path == bad]
    assert summary.verified == ""


async def test_prune_keeps_the_newest_verified_and_never_the_failed_nights(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "backups"
    for name in ("b1", "b2", "b3", "b4", "b5"):
        await create_backup(root / name, filled.stores)
    (root / "damaged").mkdir()
    (root / "damaged" / "manifest.json").write_text("{", encoding="utf-8")
    # Nothing verified yet: nothing is removed, whatever --keep says.
    assert await run(["backup", "prune", str(root), "--keep", "1"], _ENVIRON) == 0
    assert "no verified backup" in capsys.readouterr().err
    assert len(list_backups(root)) == 6

    # b3's night failed verification; b5 is being verified now.
    for name in ("b1", "b2", "b4"):
        _vouch(root / name)
    pruned = prune_backups(root, keep=2)
    assert [s.path.name for s in pruned.removed] == ["b3", "b1"]
    assert pruned.newest_verified is not None and pruned.newest_verified.path.name == "b4"
    assert _names(root) == ["b2", "b4", "b5", "damaged"]

    # The newest verified backup stays even when newer unverified ones fill --keep.
    assert await run(["backup", "prune", str(root), "--keep", "1", "--json"], _ENVIRON) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "removed": [str(root / "b2")],
        "held": [],
        "kept": 1,
        "newest_verified": str(root / "b4"),
    }
    assert _names(root) == ["b4", "b5", "damaged"]

    assert await run(["backup", "list", str(root), "--json"], _ENVIRON) == 0
    listed = {Path(b["backup"]).name: b["verified"] for b in json.loads(capsys.readouterr().out)}
    assert listed["b5"] is None and listed["b4"]
    assert await run(["backup", "list", str(root)], _ENVIRON) == 0
    table = capsys.readouterr().out.splitlines()
    assert "VERIFIED" in table[0]
    assert " no " in next(line for line in table if line.startswith("b5"))

    with pytest.raises(BackupError, match="at least the newest"):
        prune_backups(root, keep=0)


async def test_prune_leaves_a_backup_being_read_and_holds_its_lock_while_removing(
    filled: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "backups"
    for name in ("b1", "b2", "b3"):
        await create_backup(root / name, filled.stores)
        _vouch(root / name)

    with folders.reading(root / "b1"):  # a restore (or verify) of b1 is under way
        pruned = prune_backups(root, keep=2)
    assert pruned.removed == [] and [s.path.name for s in pruned.held] == ["b1"]
    assert (root / "b1").is_dir()

    removing: list[tuple[str, bool, bool]] = []
    remove_tree = folders.remove_tree

    def observed(path: Path) -> None:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
            locked = False
        except BlockingIOError:
            locked = True
        finally:
            os.close(descriptor)
        removing.append((path.name, locked, folders.is_partial(path)))
        remove_tree(path)

    monkeypatch.setattr(folders, "remove_tree", observed)
    pruned = prune_backups(root, keep=2)
    assert [s.path.name for s in pruned.removed] == ["b1"]
    # Removed under the lock, by a name create's sweep of partial backups never takes.
    ((name, locked, partial),) = removing
    assert name.startswith(".b1.scriptgen-pruning-") and locked and not partial
    assert _names(root) == ["b2", "b3"]


async def test_verify_refuses_a_backup_a_prune_is_removing(filled: Filled, tmp_path: Path) -> None:
    backup = tmp_path / "b1"
    await create_backup(backup, filled.stores)
    descriptor = os.open(backup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as prune_backups does
        with pytest.raises(BackupError, match="locked by another scriptgen backup"):
            await verify_backup(backup)
    finally:
        os.close(descriptor)
    await verify_backup(backup)


async def test_an_interrupted_prune_is_finished_by_the_next_and_not_swept(
    filled: Filled, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    await create_backup(root / "b2", filled.stores)
    _vouch(root / "b2")
    left = root / ".b1.scriptgen-pruning-0badc0de"
    left.mkdir()
    (left / "database.sqlite3").write_bytes(b"half removed")
    then = time.time() - 24 * 3600
    os.utime(left, (then, then))

    progress: list[str] = []
    await create_backup(root / "b3", filled.stores, progress.append)
    assert left.exists() and not [line for line in progress if "unfinished" in line]
    pruned = prune_backups(root, keep=5)
    assert pruned.finished == [left] and not left.exists()
