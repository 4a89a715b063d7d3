"""Backup folders on disk: private to their owner, durable before they appear, swept when stale.

A backup holds secrets (the project store's `shared_secrets`, among them the
job-token HMAC key, and API key hashes), so a backup folder is 0700 and its
files 0600 whatever the umask; restore's scratch folder likewise. Before a
folder is published by a rename, each of its files and folders is fsynced, and
after it the parent folder: once `create` or `restore` reports success, a
power loss cannot leave the folder with missing or empty files under its name.

A backup being written holds an exclusive lock (`flock`) on its hidden
`.NAME.partial-…` folder until it is renamed. `sweep_partial` removes such
folders left by interrupted runs: those no running backup holds and nothing
was written into for `STALE_AFTER`.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

PRIVATE_FOLDER: Final = 0o700
PRIVATE_FILE: Final = 0o600
#: A partial backup untouched for this long, and not locked, was left by an interrupted run.
STALE_AFTER: Final = 6 * 3600.0
_PARTIAL: Final = re.compile(r"^\..+\.partial-[0-9a-f]{8}$")


def partial_name(name: str, token: str) -> str:
    """The hidden name a backup called `name` is written under (`token`: 8 hex digits)."""
    return f".{name}.partial-{token}"


def is_partial(path: Path) -> bool:
    """Whether `path` is named like a backup being written (or left by an interrupted run)."""
    return bool(_PARTIAL.match(path.name))


def make_private_folder(path: Path) -> None:
    """Create the folder `path` (its parent must exist), 0700 whatever the umask."""
    path.mkdir(mode=PRIVATE_FOLDER)
    os.chmod(path, PRIVATE_FOLDER)


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


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (a backup being written) while inside."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(descriptor)


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


def sweep_partial(parent: Path, stale_after: float = STALE_AFTER) -> list[tuple[Path, float]]:
    """Remove the partial backups in `parent` left by interrupted runs; each with its age.

    A partial backup is left alone while a running backup holds its lock, or
    while anything in it was written less than `stale_after` seconds ago.
    """
    removed: list[tuple[Path, float]] = []
    for path in sorted(parent.iterdir()):
        if not is_partial(path) or path.is_symlink() or not path.is_dir():
            continue
        age = time.time() - _last_written(path)
        if age < stale_after:
            continue
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a backup is still writing it
            shutil.rmtree(path)
        finally:
            os.close(descriptor)
        removed.append((path, age))
    return removed
