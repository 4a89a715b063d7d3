"""Storage faults as retryable errors: SQLite's locked / disk-full / I/O failures.

A fault of the disk or of another process holding the database is not a bug:
the caller gets UNAVAILABLE (`STORE_UNAVAILABLE`, with RetryInfo, so the
gateway answers 503 with `Retry-After`) and a message saying what is wrong.
Any other SQLite error (a bad statement, a constraint) stays what it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from server.errors import Unavailable

#: Seconds a caller is told to wait before retrying a store fault.
STORE_RETRY_SECONDS: Final = 2.0

# Primary result codes (the low byte of an extended code), https://sqlite.org/rescode.html
_BUSY, _LOCKED, _NOMEM, _READONLY, _IOERR, _FULL, _CANTOPEN, _PROTOCOL = 5, 6, 7, 8, 10, 13, 14, 15
_PROBLEMS: Final = {
    _BUSY: "is locked by another writer",
    _LOCKED: "is locked by another writer",
    _NOMEM: "is out of memory",
    _READONLY: "cannot be written (read-only file or disk)",
    _IOERR: "failed to read or write its disk",
    _FULL: "cannot be written: its disk is full",
    _CANTOPEN: "cannot open its files",
    _PROTOCOL: "is locked by another writer",
}


def is_lock_conflict(error: sqlite3.Error) -> bool:
    """Whether another connection's lock refused `error`'s statement (BUSY, LOCKED, or
    PROTOCOL: WAL's locks could not be taken), as `store_fault` says "locked"."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_BUSY, _LOCKED, _PROTOCOL)


def store_fault(error: sqlite3.Error) -> Unavailable | None:
    """UNAVAILABLE for a fault of the disk or of another process's lock; None otherwise."""
    code = getattr(error, "sqlite_errorcode", None)
    problem = None if code is None else _PROBLEMS.get(code & 0xFF)
    if problem is None:
        return None
    return Unavailable(
        f"the project store {problem}; retry later",
        reason="STORE_UNAVAILABLE",
        retry_after=STORE_RETRY_SECONDS,
    )


@asynccontextmanager
async def sqlite_faults() -> AsyncIterator[None]:
    """Turn SQLite storage faults raised inside into `store_fault` errors."""
    try:
        yield
    except sqlite3.Error as error:
        fault = store_fault(error)
        if fault is None:
            raise
        raise fault from error
