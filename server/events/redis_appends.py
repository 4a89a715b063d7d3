"""Appends to the Redis event log that arrive together go to Redis in one pipeline.

Every running job appends its events (a text delta every 100 ms while it
writes), each through the append script. One command costs ~0.2 ms of redis-py
on the event loop (the pool, a timeout task, packing, parsing), so with 200 jobs
writing, the appends alone took most of a core's CPU. Here appends queue while
one pipeline is in flight and go out together in the next: one round trip and
one pass through redis-py for all of them (a group commit). An append waits for
at most the pipeline in flight and its own; each job still appends its events
one after another, so their order is kept.

Each append's own outcome comes back to its caller: the script's refusal as a
`ResponseError`, a lost connection (after redis-py's retries, which resend the
whole pipeline: the script recognises an append it already took) as redis-py's
error, which the caller translates as for any command. A caller cancelled while
waiting leaves its append in the pipeline; whether it was taken is then unknown,
as for a command cancelled in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

_Pending = tuple[str, Sequence[bytes | str | int], asyncio.Future[object]]


class AppendBatches:
    """Runs `script` for each append, the appends waiting together in one pipeline."""

    def __init__(self, client: aioredis.Redis, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._pending: list[_Pending] = []
        self._flushing: asyncio.Task[None] | None = None

    async def run(self, key: str, args: Sequence[bytes | str | int]) -> object:
        """The script's reply for one append; raises its error, or redis-py's."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._pending.append((key, args, future))
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush(), name="scriptgen-redis-appends")
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._send(batch)
                except Exception as error:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                except BaseException:
                    for _, _, future in batch:
                        future.cancel()
                    raise
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue  # its caller was cancelled
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flushing = None
            for _, _, future in self._pending:
                # Only when this task itself was cancelled (the loop is closing).
                future.cancel()
            self._pending = []

    async def _send(self, batch: list[_Pending]) -> list[object]:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, args, _ in batch:
                await self._script(keys=[key], args=list(args), client=pipe)
            return list(await pipe.execute(raise_on_error=False))
