"""Redis keys under Scriptgen's prefix: DUMP with expiry, RESTORE into an empty prefix."""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any, Final

import pytest
from redis.asyncio import Redis

from server.backup import BackupError, redis_keys

#: Each key's value (an event stream's DUMP, say), and how many keys the two files hold.
_VALUE_BYTES: Final = 16 * 1024
_COUNTS: Final = (100, 400)


async def test_keys_come_back_with_their_values_and_expiry(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}idempotency:a", "projects/p1", ex=3600)
        await client.xadd(f"{redis_prefix}events:g1", {"sequence": "1"})
        await client.hset(f"{redis_prefix}job:g1", mapping={"state": "running"})
        await client.set("someone-else:key", "not ours")
        described = await redis_keys.dump(redis_url, redis_prefix, tmp_path, lambda _: None)
        assert described["count"] == 3
        assert redis_keys.check_file(tmp_path / redis_keys.REDIS_FILE, described) == []

        with pytest.raises(BackupError, match="already holds"):
            await redis_keys.restore(
                tmp_path / redis_keys.REDIS_FILE, described, redis_url, redis_prefix, print
            )
        await client.delete(*[key async for key in client.scan_iter(match=f"{redis_prefix}*")])
        await redis_keys.restore(
            tmp_path / redis_keys.REDIS_FILE, described, redis_url, redis_prefix, lambda _: None
        )
        assert await client.get(f"{redis_prefix}idempotency:a") == b"projects/p1"
        assert 3500 < await client.ttl(f"{redis_prefix}idempotency:a") <= 3600
        assert await client.ttl(f"{redis_prefix}job:g1") == -1
        assert await client.hgetall(f"{redis_prefix}job:g1") == {b"state": b"running"}
        assert await client.xlen(f"{redis_prefix}events:g1") == 1
    finally:
        await client.delete("someone-else:key")
        await client.aclose()


def test_an_altered_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / redis_keys.REDIS_FILE
    path.write_text('{"key": "c2NyaXB0Z2VuOmE=", "dump": "AAAA", "expire_at_ms": null}\n')
    problems = redis_keys.check_file(path, {"keys": {"scriptgen:a": "0" * 64}, "count": 1})
    assert problems == [f"{path.name}: key 'scriptgen:a': digest mismatch or not in the manifest"]


def _key_file(path: Path, count: int) -> dict[str, Any]:
    """A key file of `count` keys of `_VALUE_BYTES` each, and its manifest entry."""
    keys: dict[str, str] = {}
    with path.open("w", encoding="ascii") as stream:
        for number in range(count):
            entry = {
                "key": base64.b64encode(f"scriptgen:events:g{number}".encode()).decode(),
                "dump": base64.b64encode(os.urandom(_VALUE_BYTES)).decode(),
                "expire_at_ms": None,
            }
            keys[f"scriptgen:events:g{number}"] = redis_keys.entry_digest(entry)
            stream.write(json.dumps(entry) + "\n")
    return {"keys": keys, "count": count}


def test_checking_a_key_file_holds_one_key_at_a_time(tmp_path: Path) -> None:
    peaks = []
    for count in _COUNTS:
        path = tmp_path / f"{count}.jsonl"
        described = _key_file(path, count)
        tracemalloc.start()
        try:
            assert redis_keys.check_file(path, described) == []
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # Less than a tenth of a value more per key: values are not kept, only key names.
    assert (peaks[1] - peaks[0]) / (_COUNTS[1] - _COUNTS[0]) < _VALUE_BYTES / 10, peaks


async def test_a_key_held_twice_by_an_older_backup_is_restored_once(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Dumps before SCAN's repeats were skipped could write a key twice; both lines verify."""
    path = tmp_path / redis_keys.REDIS_FILE
    entry = {
        "key": base64.b64encode(f"{redis_prefix}job:g1".encode()).decode(),
        "dump": "",
        "expire_at_ms": None,
    }
    client = Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_prefix}job:g1", "running")
        value = await client.dump(f"{redis_prefix}job:g1")
        assert value is not None
        entry["dump"] = base64.b64encode(value).decode()
        await client.delete(f"{redis_prefix}job:g1")
        path.write_text((json.dumps(entry) + "\n") * 2, encoding="ascii")
        described = {"keys": {f"{redis_prefix}job:g1": redis_keys.entry_digest(entry)}, "count": 1}
        assert redis_keys.check_file(path, described) == []

        undo = await redis_keys.restore(path, described, redis_url, redis_prefix, lambda _: None)
        assert await client.get(f"{redis_prefix}job:g1") == b"running"
        await undo()
        assert await client.exists(f"{redis_prefix}job:g1") == 0
    finally:
        await client.aclose()
