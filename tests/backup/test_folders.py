"""Backup folders on disk: private whatever the umask, fsynced around the rename, swept, pruned."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scriptgen.cli import run

from server.backup import (
    BackupError,
    Stores,
    create_backup,
    folders,
    list_backups,
    prune_backups,
    restore_backup,
)
from tests.backup.conftest import Filled

_ENVIRON = {"SCRIPTGEN_AUTH": "disabled", "SCRIPTGEN_GRPC_ADDRESS": "127.0.0.1:0"}
_DAY = 24 * 3600.0


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Files and folders created as permissively as a careless environment would."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _modes(root: Path) -> dict[str, int]:
    """Every folder and file under `root` (and `root`), by relative path, with its mode."""
    found = {".": _mode(root)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = _mode(path)
    return found


def _private(modes: dict[str, int], root: Path) -> dict[str, int]:
    """What `modes` should be: folders 0700, files 0600."""
    return {
        name: (folders.PRIVATE_FOLDER if (root / name).is_dir() else folders.PRIVATE_FILE)
        for name in modes
    }


@pytest.mark.usefixtures("open_umask")
async def test_backups_and_restores_are_private_whatever_the_umask(
    filled: Filled, tmp_path: Path
) -> None:
    """They hold `shared_secrets` (the job-token HMAC key) and API key hashes."""
    backup = tmp_path / "backups" / "b1"
    staged: list[int] = []

    def progress(_: str) -> None:
        staged.extend(_mode(p) for p in backup.parent.glob(".b1.partial-*"))

    await create_backup(backup, filled.stores, progress)

    assert staged and set(staged) == {folders.PRIVATE_FOLDER}  # while being written, too
    modes = _modes(backup)
    assert len(modes) == 4  # the folder, the database, knowledge, the manifest
    assert modes == _private(modes, backup)

    restored = tmp_path / "restored"
    scratch: list[int] = []

    def restoring(_: str) -> None:
        scratch.extend(_mode(p) for p in tmp_path.glob(".restored.restore-*"))

    await restore_backup(backup, Stores.from_config(filled.elsewhere(restored)), restoring)
    assert scratch and set(scratch) == {folders.PRIVATE_FOLDER}
    modes = _modes(restored)
    assert "scriptgen.sqlite3" in modes and any(name.startswith("chroma/") for name in modes)
    assert modes == _private(modes, restored)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every descriptor fsynced, in order."""
    paths: list[str] = []
    real = os.fsync

    def fsync(descriptor: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    return paths


async def test_every_file_and_folder_is_fsynced_around_the_rename(
    filled: Filled, tmp_path: Path, synced: list[str]
) -> None:
    backup = tmp_path / "backups" / "b1"
    await create_backup(backup, filled.stores)

    (staging,) = {Path(p).parent for p in synced if Path(p).name == "manifest.json"}
    assert staging.name.startswith(".b1.partial-")
    # Each file, then its folder, before the rename; the folder renamed into, after it.
    files = [str(staging / p.name) for p in backup.iterdir()]
    assert set(files) <= set(synced[:-2])
    assert synced[-2:] == [str(staging), str(backup.parent)]

    synced.clear()
    restored = tmp_path / "restored"
    await restore_backup(backup, Stores.from_config(filled.elsewhere(restored)))
    (scratch,) = {Path(p).parent for p in synced if Path(p).name == "scriptgen.sqlite3"}
    assert scratch.name.startswith(".restored.restore-")
    written = {str(scratch / p.relative_to(restored)) for p in restored.rglob("*")}
    assert written <= set(synced[:-1])
    assert synced[-1] == str(tmp_path)


def _leave_partial(root: Path, name: str, age_seconds: float) -> Path:
    """A partial backup folder as an interrupted run leaves it, last written `age` ago."""
    path = root / name
    path.mkdir(parents=True)
    (path / "database.sqlite3").write_bytes(b"half a copy")
    then = time.time() - age_seconds
    for written in (path / "database.sqlite3", path):
        os.utime(written, (then, then))
    return path


async def test_create_sweeps_stale_partial_backups_and_says_so(
    filled: Filled, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    stale = _leave_partial(root, ".b0.partial-0badc0de", _DAY)
    fresh = _leave_partial(root, ".b9.partial-12345678", 60)  # may still be being written
    held = _leave_partial(root, ".b8.partial-87654321", _DAY)
    mine = _leave_partial(root, ".notes.partial", _DAY)  # not a name backups use
    progress: list[str] = []
    with folders.locked(held):  # a backup still writing, however long it has been
        await create_backup(root / "b1", filled.stores, progress.append)

    assert not stale.exists()
    assert fresh.exists() and held.exists() and mine.exists()
    (said,) = [line for line in progress if line.startswith("removed ")]
    assert str(stale) in said and "interrupted" in said and "24.0 hours" in said
    assert [s.path.name for s in list_backups(root)] == ["b1"]


async def test_list_names_unfinished_backups(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "backups"
    await create_backup(root / "b1", filled.stores)
    _leave_partial(root, ".b2.partial-0badc0de", 60)
    assert await run(["backup", "list", str(root)], _ENVIRON) == 0
    printed = capsys.readouterr()
    assert "b1" in printed.out and ".b2.partial" not in printed.out
    assert "1 unfinished backups" in printed.err and ".b2.partial-0badc0de" in printed.err


async def test_prune_keeps_the_newest(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "backups"
    for name in ("b1", "b2", "b3"):
        await create_backup(root / name, filled.stores)
    (root / "damaged").mkdir()
    (root / "damaged" / "manifest.json").write_text("{", encoding="utf-8")

    removed = prune_backups(root, keep=2)
    assert [s.path.name for s in removed] == ["b1"]
    assert sorted(p.name for p in root.iterdir()) == ["b2", "b3", "damaged"]

    assert await run(["backup", "prune", str(root), "--keep", "1", "--json"], _ENVIRON) == 0
    assert capsys.readouterr().out.strip() == (f'{{"removed": ["{root / "b2"}"], "kept": 1}}')
    assert sorted(p.name for p in root.iterdir()) == ["b3", "damaged"]
    with pytest.raises(SystemExit) as refused:
        await run(["backup", "prune", str(root), "--keep", "0"], _ENVIRON)
    assert refused.value.code == 2
    assert "--keep: must be between 1" in capsys.readouterr().err
    with pytest.raises(BackupError, match="at least the newest"):
        prune_backups(root, keep=0)
