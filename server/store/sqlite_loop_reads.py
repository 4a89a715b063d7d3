"""Small reads of the SQLite store answered on the event loop, without a trip to a thread.

Every job start reads its project and every plan stage its latest episodes.
Through aiosqlite each read is a hop to the connection's thread and back, and
while the loop is busy (a burst of job starts) that thread waits for the GIL up
to the interpreter's switch interval, 5 ms, per hop: a burst's starts queue
behind each other's hops. These reads are index lookups of a few rows, so a
connection of their own answers them on the loop in tens of microseconds.

That connection never waits. In WAL mode a reader does not wait for writers; it
is query-only with a busy timeout of 0, so a read that does meet a lock (WAL
recovery, another process's exclusive checkpoint) answers None at once and the
caller takes the threaded path, which waits out the busy timeout as before.
Other storage faults are the store's `STORE_UNAVAILABLE`, as on that path.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from server.storage_faults import is_lock_conflict, store_fault


class LoopReads:
    """A query-only connection to the store's file for reads that must not wait."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    def open(self) -> None:
        """Connect (after the store's own connection made the file WAL and migrated it)."""
        connection = sqlite3.connect(self._path, isolation_level=None, timeout=0)
        try:
            connection.execute("PRAGMA busy_timeout=0")
            connection.execute("PRAGMA query_only=1")
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def close(self) -> None:
        """Disconnect; later reads answer None."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def rows(self, query: str, parameters: tuple[Any, ...]) -> list[Any] | None:
        """The rows of `query`, or None when it would have to wait (or the store is closed)."""
        if self._connection is None:
            return None
        try:
            return self._connection.execute(query, parameters).fetchall()
        except sqlite3.Error as error:
            if is_lock_conflict(error):
                return None
            fault = store_fault(error)
            if fault is None:
                raise
            raise fault from error
