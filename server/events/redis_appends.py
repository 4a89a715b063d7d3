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
error, which the caller translates as for any command. The script is sent by
its SHA; a Redis that does not know it (restarted, or its scripts flushed) gets
it loaded and the appends it refused sent again.

A caller cancelled before its batch goes out is left out of it. One cancelled
while its batch is in flight cannot take the append back: `settled` lets the
job wait for that batch before it asks Redis where its log stands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from server.events.redis_connection import retry_budget

_Pending = tuple[Sequence[str], Sequence[bytes | str | int], asyncio.Future[object]]


class AppendBatches:
    """Runs `script` for each append, the appends waiting together in one pipeline."""

    def __init__(self, client: aioredis.Redis, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._pending: list[_Pending] = []
        #: Set once the batch that the pending appends will go in has been answered.
        self._next_done = asyncio.Event()
        #: Each key's latest append: the `done` of its batch.
        self._batch_of: dict[str, asyncio.Event] = {}
        self._flushing: asyncio.Task[None] | None = None

    async def run(self, keys: Sequence[str], args: Sequence[bytes | str | int]) -> object:
        """The script's reply for one append to the log `keys[0]` (the script's other keys
        follow it); raises its error, or redis-py's."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        key = keys[0]
        self._pending.append((keys, args, future))
        self._batch_of[key] = self._next_done
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush(), name="scriptgen-redis-appends")
        return await future

    async def settled(self, key: str) -> None:
        """Return once no append to `key` is queued or in flight."""
        done = self._batch_of.get(key)
        if done is not None:
            await done.wait()

    async def _flush(self) -> None:
        done = self._next_done
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                done, self._next_done = self._next_done, asyncio.Event()
                # Callers cancelled while they waited: their appends are not sent at all.
                batch = [pending for pending in batch if not pending[2].done()]
                try:
                    # A budget per batch: this task was started inside one appender's call.
                    with retry_budget(own=True):
                        results = await self._send(batch) if batch else []
                except Exception as error:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                finally:
                    self._answered(done)
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue  # its caller was cancelled while the batch was in flight
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            # Only when this task itself was cancelled (the loop is closing): nothing waits on.
            self._flushing = None
            for _, _, future in self._pending:
                future.cancel()
            self._pending = []
            self._answered(done)
            self._answered(self._next_done)
            self._next_done = asyncio.Event()

    def _answered(self, done: asyncio.Event) -> None:
        done.set()
        for key in [key for key, batch in self._batch_of.items() if batch is done]:
            del self._batch_of[key]

    async def _send(self, batch: list[_Pending]) -> list[object]:
        results = await self._pipeline(batch)
        unknown = [
            index for index, result in enumerate(results) if isinstance(result, NoScriptError)
        ]
        if unknown:
            await self._client.script_load(self._script.script)
            again = await self._pipeline([batch[index] for index in unknown])
            for index, result in zip(unknown, again, strict=True):
                results[index] = result
        return results

    async def _pipeline(self, batch: list[_Pending]) -> list[object]:
        # Through the script object, the pipeline first checks Redis knows the script (one
        # round trip). Sending the SHA alone was measured slower end to end: without that
        # round trip the batches were smaller and the streams fell to 18-28 tok/s from 29-30
        # (`sse-openai-200-redis`, 5 runs each). A resend after a lost connection skips the
        # check, which is why `_send` still handles NOSCRIPT.
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                await self._script(keys=list(keys), args=list(args), client=pipe)
            return list(await pipe.execute(raise_on_error=False))
