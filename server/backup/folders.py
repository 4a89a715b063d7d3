"""Backup folders on disk: private to their owner, durable before they appear, locked, swept.

A backup holds secrets (the project store's `shared_secrets`, among them the
job-token HMAC key, and API key hashes), so a backup folder is 0700 and its
files 0600 whatever the umask; restore's scratch folder likewise. Before a
folder is published by a rename, each of its files and folders is fsynced, and
after it the parent folder (and any folder made on the way to it): once
`create` or `restore` reports success, a power loss cannot leave the folder
with missing or empty files under its name.

Locks (`flock` on the folder): a backup being written holds an exclusive one
on its hidden `.NAME.scriptgen-partial-XXXXXXXX` folder until it is renamed;
`verify` and `restore` hold a shared one on the backup they read; `prune`
takes an exclusive one (without waiting) before it renames a backup to
`.NAME.scriptgen-pruning-XXXXXXXX`, and holds it until the folder is gone.

`sweep_partial` removes partial folders left by interrupted runs: those no
running backup holds and nothing was written into for `STALE_AFTER`. It looks
only at names this tool makes (`.NAME.scriptgen-partial-` and 8 hex digits),
so `create ~/b1` never touches another program's folders in `~`; a folder it
cannot remove is reported and left, and never fails the backup.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from server.backup.errors import BackupError

PRIVATE_FOLDER: Final = 0o700
PRIVATE_FILE: Final = 0o600
#: A partial backup untouched for this long, and not locked, was left by an interrupted run.
STALE_AFTER: Final = 6 * 3600.0
_PARTIAL: Final = re.compile(r"^\..+\.scriptgen-partial-[0-9a-f]{8}$")
_PRUNING: Final = re.compile(r"^\..+\.scriptgen-pruning-[0-9a-f]{8}$")


def partial_name(name: str, token: str) -> str:
    """The hidden name a backup called `name` is written under (`token`: 8 hex digits)."""
    return f".{name}.scriptgen-partial-{token}"


def pruning_name(name: str, token: str) -> str:
    """The hidden name a backup called `name` is removed under (`token`: 8 hex digits)."""
    return f".{name}.scriptgen-pruning-{token}"


def is_partial(path: Path) -> bool:
    """Whether `path` is named like a backup being written (or left by an interrupted run)."""
    return bool(_PARTIAL.match(path.name))


def is_pruning(path: Path) -> bool:
    """Whether `path` is named like a backup being removed by `prune`."""
    return bool(_PRUNING.match(path.name))


def make_private_folder(path: Path) -> None:
    """Create the folder `path` (its parent must exist), 0700 whatever the umask."""
    path.mkdir(mode=PRIVATE_FOLDER)
    os.chmod(path, PRIVATE_FOLDER)


def make_parents(path: Path) -> None:
    """Create the missing folders above `path`, each fsynced into the folder holding it."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        sync_folder(folder.parent)


def create_private_file(path: Path) -> None:
    """Create the empty file `path`, 0600 whatever the umask (it must not exist)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)


def _fsync(path: Path | str, flags: int = 0) -> None:
    descriptor = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(path: Path) -> None:
    """fsync the folder `path` itself: its entries (a rename into it, a new file) are durable."""
    _fsync(path, os.O_DIRECTORY)


def seal_file(path: Path) -> None:
    """Make the file `path` 0600 and fsync it."""
    os.chmod(path, PRIVATE_FILE)
    _fsync(path)


def seal_tree(root: Path) -> None:
    """Every file under `root` 0600 and every folder 0700 (`root` too), all fsynced.

    Deepest first, so each folder is synced after what it holds.
    """
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                seal_file(path)
        os.chmod(folder, PRIVATE_FOLDER)
        _fsync(folder, os.O_DIRECTORY)


def _raise_unless_gone(_function: Callable[..., object], _path: str, error: BaseException) -> None:
    if not isinstance(error, FileNotFoundError):
        raise error


def remove_tree(path: Path) -> None:
    """`shutil.rmtree`, taking what is already gone (removed by someone else) as removed."""
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_raise_unless_gone)
    else:
        shutil.rmtree(
            path, onerror=lambda function, name, info: _raise_unless_gone(function, name, info[1])
        )


def _same_folder(path: Path, descriptor: int) -> bool:
    """Whether `path` still names the folder open as `descriptor` (not renamed or replaced)."""
    try:
        named = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (a backup being written) while inside."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(descriptor)


@contextmanager
def reading(folder: Path) -> Iterator[None]:
    """Hold a shared lock on the backup `folder` while inside, so `prune` leaves it alone.

    BackupError when a prune is removing it (it holds the exclusive lock).
    """
    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise BackupError(f"{folder}: no such folder") from None
    except NotADirectoryError:
        raise BackupError(f"{folder}: not a folder") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(
                f"{folder}: locked by another scriptgen backup (a prune removing it,"
                " or the create that made it finishing); try again"
            ) from None
        if not _same_folder(folder, descriptor):
            raise BackupError(f"{folder}: removed (by a prune) as it was opened")
        yield
    finally:
        os.close(descriptor)


def remove_backup(path: Path, token: str) -> bool:
    """Remove the backup folder `path`; False (and nothing done) while anybody holds its lock.

    Under the exclusive lock, held to the end: renamed to its pruning name
    first (so no half-removed backup is ever listed, and an interrupted removal
    is finished by the next prune), the rename made durable, then removed.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False  # removed meanwhile (by another prune)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a verify or restore reads it, or another prune removes it
        if not _same_folder(path, descriptor):
            return False  # another prune renamed it before we locked it
        doomed = path.with_name(pruning_name(path.name, token))
        path.rename(doomed)
        sync_folder(path.parent)
        remove_tree(doomed)
        return True
    finally:
        os.close(descriptor)


def finish_pruning(parent: Path) -> list[Path]:
    """Remove the folders of `parent` an interrupted prune renamed but did not remove."""
    finished: list[Path] = []
    for path in sorted(parent.iterdir()):
        if not is_pruning(path) or path.is_symlink() or not path.is_dir():
            continue
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue  # the prune removing it finished
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running prune is removing it
            remove_tree(path)
        finally:
            os.close(descriptor)
        finished.append(path)
    return finished


@dataclass(frozen=True, slots=True)
class Swept:
    """A stale partial backup the sweep removed, or (`error` set) could not remove."""

    path: Path
    #: Seconds since anything was written into it (0 when unknown).
    age: float
    error: str = ""


def _last_written(folder: Path) -> float:
    """The newest modification time of `folder` and everything in it."""
    newest = folder.lstat().st_mtime
    for parent, folders, files in os.walk(folder):
        for name in (*folders, *files):
            try:
                newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _sweep_one(path: Path, stale_after: float) -> float | None:
    """Remove the partial backup `path` when stale and unlocked; its age, or None if left."""
    if path.is_symlink() or not path.is_dir():
        return None
    age = time.time() - _last_written(path)
    if age < stale_after:
        return None
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a backup is still writing it
        if not _same_folder(path, descriptor):
            return None
        remove_tree(path)
    finally:
        os.close(descriptor)
    return age


def sweep_partial(parent: Path, stale_after: float = STALE_AFTER) -> list[Swept]:
    """Remove the partial backups in `parent` left by interrupted runs; those it tried.

    A partial backup is left alone while a running backup holds its lock, or
    while anything in it was written less than `stale_after` seconds ago. One
    that cannot be read or removed (another user's, say) is returned with its
    error, and the sweep goes on: it never fails the backup that runs it.
    """
    try:
        paths = sorted(path for path in parent.iterdir() if is_partial(path))
    except OSError as error:
        return [Swept(parent, 0.0, str(error))]
    swept: list[Swept] = []
    for path in paths:
        try:
            age = _sweep_one(path, stale_after)
        except FileNotFoundError:
            continue  # gone meanwhile: published by the backup writing it, or removed
        except OSError as error:
            swept.append(Swept(path, 0.0, str(error)))
            continue
        if age is not None:
            swept.append(Swept(path, age))
    return swept
