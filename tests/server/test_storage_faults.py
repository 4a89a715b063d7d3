"""SQLite's result codes as store faults: which are another process's lock, which the disk's."""

from __future__ import annotations

import sqlite3

import pytest

from server.storage_faults import is_lock_conflict, store_fault


def _error(code: int) -> sqlite3.Error:
    error = sqlite3.OperationalError("test")
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize(
    ("code", "locked", "problem"),
    [
        (5, True, "locked"),  # SQLITE_BUSY
        (5 | (1 << 8), True, "locked"),  # SQLITE_BUSY_RECOVERY: the primary code counts
        (6, True, "locked"),  # SQLITE_LOCKED
        (15, True, "locked"),  # SQLITE_PROTOCOL: WAL's locks could not be taken
        (13, False, "full"),  # SQLITE_FULL
        (10, False, "disk"),  # SQLITE_IOERR
        (1, False, None),  # SQLITE_ERROR: a bad statement is no store fault
    ],
)
def test_codes(code: int, locked: bool, problem: str | None) -> None:
    error = _error(code)
    assert is_lock_conflict(error) is locked
    fault = store_fault(error)
    if problem is None:
        assert fault is None
    else:
        assert fault is not None and fault.reason == "STORE_UNAVAILABLE"
        assert problem in fault.message


def test_an_error_without_a_code_is_neither() -> None:
    error = sqlite3.OperationalError("no code")
    assert not is_lock_conflict(error)
    assert store_fault(error) is None
