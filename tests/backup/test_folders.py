"""Backup folders on disk: private whatever the umask, fsynced around the rename, swept."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scriptgen.cli import run

from server.backup import (
    Stores,
    create_backup,
    folders,
    list_backups,
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
        staged.extend(_mode(p) for p in backup.parent.glob(".b1.scriptgen-partial-*"))

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
    assert staging.name.startswith(".b1.scriptgen-partial-")
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
    stale = _leave_partial(root, ".b0.scriptgen-partial-0badc0de", _DAY)
    fresh = _leave_partial(root, ".b9.scriptgen-partial-12345678", 60)  # may still be written
    held = _leave_partial(root, ".b8.scriptgen-partial-87654321", _DAY)
    mine = _leave_partial(root, ".notes.partial", _DAY)  # not a name backups use
    # Another program's folder in the same parent (`create ~/b1` sweeps `~`): not ours.
    theirs = _leave_partial(root, ".photos.partial-0badc0de", _DAY)
    progress: list[str] = []
    with folders.locked(held):  # a backup still writing, however long it has been
        await create_backup(root / "b1", filled.stores, progress.append)

    assert not stale.exists()
    assert fresh.exists() and held.exists() and mine.exists() and theirs.exists()
    (said,) = [line for line in progress if line.startswith("removed ")]
    assert str(stale) in said and "interrupted" in said and "24.0 hours" in said
    assert [s.path.name for s in list_backups(root)] == ["b1"]


async def test_list_names_unfinished_backups(
    filled: Filled, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "backups"
    await create_backup(root / "b1", filled.stores)
    _leave_partial(root, ".b2.scriptgen-partial-0badc0de", 60)
    assert await run(["backup", "list", str(root)], _ENVIRON) == 0
    printed = capsys.readouterr()
    assert "b1" in printed.out and ".b2." not in printed.out
    assert "1 unfinished backups" in printed.err
    assert ".b2.scriptgen-partial-0badc0de" in printed.err


async def test_a_partial_folder_that_cannot_be_swept_never_fails_a_backup(
    filled: Filled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's partial folder (no permission), one removed as it is looked at, one
    whose files vanish during the removal: each is reported or passed over, and the backup
    is made."""
    root = tmp_path / "backups"
    foreign = _leave_partial(root, ".b1.scriptgen-partial-0000000a", _DAY)
    vanishing = _leave_partial(root, ".b2.scriptgen-partial-0000000b", _DAY)
    thinning = _leave_partial(root, ".b3.scriptgen-partial-0000000c", _DAY)
    stale = _leave_partial(root, ".b4.scriptgen-partial-0000000d", _DAY)
    real_open, real_unlink = os.open, os.unlink

    def open_as_another_process(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path) == foreign:
            raise PermissionError(13, "Permission denied", str(path))
        if Path(path) == vanishing:
            vanishing.rename(tmp_path / "elsewhere")  # another run got there first
        return real_open(path, flags, *args, **kwargs)

    def unlink_after_another(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name == "database.sqlite3" and kwargs.get("dir_fd") is not None:
            real_unlink(path, *args, **kwargs)  # removed by someone else just before us
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_as_another_process)
    monkeypatch.setattr(os, "unlink", unlink_after_another)
    progress: list[str] = []
    await create_backup(root / "b9", filled.stores, progress.append)
    monkeypatch.undo()

    assert [s.path.name for s in list_backups(root)] == ["b9"]
    assert foreign.exists() and not vanishing.exists()
    assert not thinning.exists() and not stale.exists()
    swept = [line for line in progress if str(root / ".b") in line]
    left_by_a_run = "an unfinished backup left by an interrupted run (24.0 hours untouched)"
    assert swept == [
        f"cannot remove {foreign}, an unfinished backup: [Errno 13] Permission denied: '{foreign}'",
        f"removed {thinning}: {left_by_a_run}",
        f"removed {stale}: {left_by_a_run}",
    ]


async def test_folders_made_on_the_way_are_fsynced_into_their_parents(
    filled: Filled, tmp_path: Path, synced: list[str]
) -> None:
    await create_backup(tmp_path / "new" / "deeper" / "b1", filled.stores)
    assert synced[:2] == [str(tmp_path), str(tmp_path / "new")]
    assert synced[-1] == str(tmp_path / "new" / "deeper")

    synced.clear()
    restored = tmp_path / "fresh" / "restored"
    await restore_backup(
        tmp_path / "new" / "deeper" / "b1", Stores.from_config(filled.elsewhere(restored))
    )
    assert str(tmp_path) in synced and synced[-1] == str(tmp_path / "fresh")
