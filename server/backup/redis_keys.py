"""Redis: every key under Scriptgen's prefix (jobs, event streams, idempotency, limits).

Each key is saved with `DUMP` (Redis's own serialisation, any type) and its
absolute expiry time, both covered by the key's digest, and brought back with
`RESTORE` and the time it had left, so a restored job record still expires
when the original would have; a key already past its expiry is skipped. Keys
are read with `SCAN`: Redis has no point-in-time read across keys, so a key
written during the backup may or may not be in it — the project store is the
backup's point in time.

Keys are dumped, checked and restored a batch (`_BATCH`) at a time as SCAN
and the file give them, so memory holds one batch of values, not the
keyspace; what grows with it is the manifest's digest per key (and, on
restore, the names of the keys restored, to undo them).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from redis.asyncio import Redis

from server.backup.errors import BackupError, problems_of
from server.backup.knowledge import Progress
from server.backup.manifest import FORMAT_VERSION, digest

REDIS_FILE: Final = "redis.jsonl"
_BATCH: Final = 500


def _pattern(prefix: str) -> str:
    """A SCAN pattern matching `prefix` literally."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"


def _name(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")


def entry_digest(entry: dict[str, Any], version: int = FORMAT_VERSION) -> str:
    """The digest of one key's name, value and expiry (format 1: name and value only)."""
    if version == 1:
        return digest({"key": entry["key"], "dump": entry["dump"]})
    return digest({key: entry[key] for key in ("key", "dump", "expire_at_ms")})


async def _scanned(client: Redis, prefix: str) -> AsyncIterator[list[bytes]]:
    """The keys under `prefix`, a batch at a time, as SCAN finds them."""
    batch: list[bytes] = []
    async for key in client.scan_iter(match=_pattern(prefix), count=_BATCH):
        batch.append(key)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def dump(url: str, prefix: str, staging: Path, progress: Progress) -> dict[str, Any]:
    """Write every key under `prefix` to `staging/redis.jsonl`; its manifest entry."""
    client = Redis.from_url(url)
    digests: dict[str, str] = {}
    try:
        info = await client.info("server")
        with (staging / REDIS_FILE).open("w", encoding="ascii") as stream:
            async for batch in _scanned(client, prefix):
                async with client.pipeline(transaction=False) as pipe:
                    for key in batch:
                        pipe.dump(key)
                        pipe.pttl(key)
                    answers = await pipe.execute()
                now_ms = int(time.time() * 1000)
                for index, key in enumerate(batch):
                    value, ttl = answers[2 * index], int(answers[2 * index + 1])
                    # Deleted or expired since SCAN saw it; or seen twice (SCAN may repeat a key).
                    if value is None or _name(key) in digests:
                        continue
                    entry = {
                        "key": base64.b64encode(key).decode(),
                        "dump": base64.b64encode(value).decode(),
                        "expire_at_ms": now_ms + ttl if ttl >= 0 else None,
                    }
                    digests[_name(key)] = entry_digest(entry)
                    stream.write(json.dumps(entry) + "\n")
                progress(f"redis: {len(digests)} keys")
    finally:
        await client.aclose()
    return {
        "kind": "redis",
        "file": REDIS_FILE,
        "prefix": prefix,
        "redis_version": str(info.get("redis_version", "")),
        "count": len(digests),
        "keys": digests,
    }


def _entries(source: Path) -> Iterator[dict[str, Any]]:
    """The entries of a key file, one at a time; BackupError naming a corrupt line."""
    with source.open(encoding="ascii") as stream:
        for number, line in enumerate(stream, start=1):
            try:
                entry = json.loads(line)
                base64.b64decode(entry["key"], validate=True)
                base64.b64decode(entry["dump"], validate=True)
                if not isinstance(entry["expire_at_ms"], int | None):
                    raise TypeError("expire_at_ms is not a time in milliseconds")
            except (ValueError, KeyError, TypeError) as error:
                raise BackupError(f"{source.name}: line {number} is corrupt: {error}") from None
            yield entry


def _batches(entries: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(entries)
    while batch := list(itertools.islice(iterator, _BATCH)):
        yield batch


def check_file(source: Path, described: dict[str, Any], version: int = FORMAT_VERSION) -> list[str]:
    """Problems of the key file against the manifest: a digest per key, and the count.

    `version` is the manifest's format: format 1 left the expiry out of the digests.
    """
    problems: list[str] = []
    expected: dict[str, str] = described["keys"]
    seen: set[str] = set()
    try:
        for entry in _entries(source):
            name = _name(base64.b64decode(entry["key"]))
            seen.add(name)
            if expected.get(name) != entry_digest(entry, version):
                problems.append(
                    f"{source.name}: key {name!r}: digest mismatch or not in the manifest"
                )
    except BackupError as error:
        return problems_of(error)
    except UnicodeDecodeError as error:
        return [f"{source.name}: {error}"]
    missing = sorted(set(expected) - seen)
    if missing:
        problems.append(f"{source.name}: {len(missing)} keys missing, e.g. {missing[0]!r}")
    return problems


async def restore(
    source: Path, described: dict[str, Any], url: str, prefix: str, progress: Progress
) -> Callable[[], Awaitable[None]]:
    """RESTORE every key into a Redis with no key under `prefix`; returns how to undo it."""
    client = Redis.from_url(url)
    # Every key restored (or being restored), for undo; a key is restored once: backups made
    # before dump skipped the keys SCAN repeats may hold one twice (check_file passes it), and
    # a second RESTORE would fail with BUSYKEY.
    restored: set[bytes] = set()

    async def undo() -> None:
        undo_client = Redis.from_url(url)
        keys = list(restored)
        try:
            for start in range(0, len(keys), _BATCH):
                await undo_client.delete(*keys[start : start + _BATCH])
        finally:
            await undo_client.aclose()

    try:
        async for key in client.scan_iter(match=_pattern(prefix), count=_BATCH):
            raise BackupError(
                f"Redis already holds {_name(key)!r} under {prefix!r}: restore needs no key there"
            )
        for entries in _batches(_entries(source)):
            now_ms = int(time.time() * 1000)
            async with client.pipeline(transaction=False) as pipe:
                for entry in entries:
                    expire_at = entry["expire_at_ms"]
                    ttl = 0 if expire_at is None else int(expire_at) - now_ms
                    if expire_at is not None and ttl <= 0:
                        continue  # it would have expired by now
                    key = base64.b64decode(entry["key"])
                    if key in restored:
                        continue
                    restored.add(key)
                    pipe.restore(key, ttl, base64.b64decode(entry["dump"]))
                await pipe.execute()
            progress(f"redis: {len(restored)} of {described['count']} keys restored")
    except BaseException:
        await undo()
        raise
    finally:
        await client.aclose()
    return undo
