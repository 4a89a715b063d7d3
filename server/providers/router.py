"""The provider router: one stage's call through an ordered chain of providers.

Before the first token of an attempt, retryable failures (429, 5xx, timeouts,
connection errors, malformed chunks) are retried on the same provider with
backoff and jitter, honouring Retry-After; a non-retryable one (bad request,
auth, a refusal) moves to the next provider at once, and so does a Retry-After
longer than the longest backoff. After text was delivered, a failure moves to
the next provider, which is asked to continue the partial text; the overlap is
trimmed so the concatenated chunks never repeat or drop text. A continuation the
provider wrote on exactly from the partial's end (an Anthropic prefill:
`TokenUsage.exact_continuation`) is not trimmed: it repeats nothing, and a trim
would drop a line legitimately said twice at the seam ("No. No. No.").

A text that stopped at the request's output cap (`TokenUsage.stop`
STOP_OUTPUT_LIMIT) is not finished: the same provider is called again to continue
it, the overlap trimmed the same way, up to MAX_CONTINUATIONS times per stage call.
An attempt that stopped there with nothing new (a reasoning model that spent the
cap thinking, a continuation that only repeated the text) fails as
`output_exhausted` instead: the same call would do the same again, so the next
provider goes on, and the breaker is not charged.

Once an attempt's stop reason is in its text is complete: a timeout of the
watchdog (below) while the provider reads the rest of its body ends the attempt
as a success, never as a failure that would have another provider continue a
finished text.

A refusal (`refused`: a content filter, or the model declining) moves to the next
provider, which applies its own policy to the same request: providers' filters
differ and misfire on fiction (a screenplay's violence), and the chain's
providers are the ones the operator accepts for every text. It is never
retried on the provider that refused.

When no provider could finish the call and each last failed on the request itself
(`FINAL_KINDS`: refused, a bad request, output exhausted), the call fails with
FAILED_PRECONDITION — CONTENT_REFUSED when they all refused, REQUEST_REFUSED
otherwise — which the job's `failed` event carries and clients do not retry. Any
other end is UNAVAILABLE PROVIDERS_UNAVAILABLE, its retry delay the soonest a
provider that may take the call said it would (its Retry-After, its breaker's
cool-down), at least a second.

A `worker_lost` failure (the core's provider worker exited mid-call) is the core's,
not the provider's: its breaker is not charged, and the same provider is called again
at once, from the text already delivered and with the overlap trimmed the same way
(the pool has the call wait for the worker started in its place). A call lost with
WORKER_LOSSES_PER_CALL workers already moves to the next provider instead: it may be
what ends them.

Each provider has a circuit breaker; an open breaker is skipped. Every
attempt is bounded by the time to first token, the idle time between tokens
and the caller's deadline; each ends the attempt (closing its HTTP stream)
and counts as a failure. What the caller caused (a bad request, its own
deadline) and refusals do not charge the breaker (`errors.UNCHARGED_KINDS`):
they release it, as a cancelled call does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace

from server.config import RouterConfig
from server.errors import DeadlineExceeded, FailedPrecondition, ServiceError, Unavailable
from server.metrics import CoreMetrics
from server.providers.base import STOP_OUTPUT_LIMIT, Prompt, Provider, TokenUsage
from server.providers.breaker import BreakerState, CircuitBreaker
from server.providers.errors import (
    BAD_REQUEST,
    OUTPUT_EXHAUSTED,
    REFUSED,
    UNCHARGED_KINDS,
    WORKER_LOST,
    ProviderFailure,
)
from server.providers.overlap import OverlapTrimmer
from server.providers.retry import Backoff
from server.providers.synthetic import token_count

log = logging.getLogger(__name__)
#: Workers one stage call may lose and still go on with the same provider; at each loss
#: after these it moves to the next provider, so that a call that ends every worker it
#: runs on ends at most this many plus one per offloaded provider of its chain.
WORKER_LOSSES_PER_CALL = 2
#: Calls one stage call may add on the same provider when a model's text stops at the
#: request's output cap (`max_output_tokens`): each asks for the rest of the text so far.
#: A text still cut after these ends there (logged): a model that runs on that long is
#: more likely looping than writing, and each call costs a full output cap.
MAX_CONTINUATIONS = 3

#: Failures another try of the same request would meet again: the request as it stands
#: (`bad_request`), its text (`refused`), or a model that writes nothing within its output
#: cap. A call whose every provider last failed so ends FAILED_PRECONDITION, not retried.
FINAL_KINDS = frozenset({REFUSED, BAD_REQUEST, OUTPUT_EXHAUSTED})

#: Called before a provider takes over from one that failed: (from, to, reason, offset).
SwitchListener = Callable[[str, str, str, int], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class UsageTotal:
    """Tokens one provider and model spent within a job."""

    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0


class ProviderRouter:
    """Holds the breakers of every provider and streams stage calls through chains."""

    def __init__(
        self,
        providers: Sequence[str],
        config: RouterConfig,
        metrics: CoreMetrics,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backoff = Backoff(config.backoff_seconds, config.max_backoff_seconds)
        #: Set whenever a breaker changes state; health watches it.
        self.changed = asyncio.Event()
        self.breakers = {
            name: CircuitBreaker(
                name,
                failure_threshold=config.breaker_failures,
                cooldown_seconds=config.breaker_cooldown_seconds,
                clock=clock,
                on_change=self._breaker_changed,
            )
            for name in providers
        }
        for name in providers:
            metrics.provider_breaker_state.labels(name).set(BreakerState.CLOSED)

    def _breaker_changed(self, name: str, state: BreakerState) -> None:
        self._metrics.provider_breaker_state.labels(name).set(state)
        log.info("provider %s: circuit breaker %s", name, state.name.lower())
        self.changed.set()

    def usable(self, names: Sequence[str] | None = None) -> bool:
        """Whether any of `names` (default: every provider) could take a call now."""
        chosen = self.breakers if names is None else names
        return any(self.breakers[name].usable for name in chosen)

    def seconds_until_change(self) -> float | None:
        """Time until the next open breaker half-opens; None when none is open."""
        waits = [b.seconds_until_half_open() for b in self.breakers.values()]
        pending = [w for w in waits if w is not None]
        return min(pending) if pending else None

    async def stream(
        self,
        stage: str,
        prompt: Prompt,
        chain: Sequence[Provider],
        usage: dict[tuple[str, str], UsageTotal],
        *,
        deadline: float | None = None,
        on_switch: SwitchListener | None = None,
    ) -> AsyncGenerator[str, None]:
        """Stream `prompt` through `chain`; add each provider's tokens to `usage`.

        `deadline` is a `time.monotonic()` instant. Raises FailedPrecondition or
        Unavailable when every provider failed (`_chain_failed`), DeadlineExceeded when the
        deadline passed.
        """
        delivered: list[str] = []
        failed: tuple[str, str] | None = None
        #: Each provider's last failure in this call: what the call's end says, if it fails.
        failures: dict[str, ProviderFailure] = {}
        workers_lost = 0
        continuations = 0
        for provider in chain:
            breaker = self.breakers[provider.name]
            attempt = 0
            #: Why this provider was to go on with the call when its breaker stopped it.
            unfinished: tuple[str, str] | None = None
            while breaker.allow():
                unfinished = None
                if failed is not None:
                    await self._switch(failed, provider.name, len("".join(delivered)), on_switch)
                    failed = None
                produced = len(delivered)
                spent = TokenUsage()
                attempt_stream = self._attempt(
                    stage, provider, prompt, "".join(delivered), spent, usage, deadline
                )
                try:
                    async with aclosing(attempt_stream):
                        async for chunk in attempt_stream:
                            delivered.append(chunk)
                            yield chunk
                except ProviderFailure as failure:
                    log.warning("%s stage: %s", stage, failure)
                    failures[provider.name] = failure
                    if failure.kind == WORKER_LOST:
                        breaker.release()  # the core's failure: no verdict on the provider
                        workers_lost += 1
                        unfinished = (provider.name, failure.kind)
                        if workers_lost <= WORKER_LOSSES_PER_CALL:
                            continue  # from what was delivered, on the worker in its place
                        # A call present at every loss may be what ends its workers.
                        failed = unfinished
                        break
                    if failure.kind in UNCHARGED_KINDS:
                        breaker.release()  # the caller's doing, or the text's: not the provider's
                    else:
                        breaker.record_failure()
                    if failure.kind == "deadline":
                        raise DeadlineExceeded(
                            "the call's deadline passed while the model was writing"
                        ) from failure
                    # Text this attempt delivered cannot be taken back: go on elsewhere.
                    mid_stream = len(delivered) > produced
                    attempt += 1
                    if mid_stream or not failure.retryable:
                        failed = (provider.name, failure.kind)
                        break
                    if attempt >= self._config.max_attempts:
                        failed = (provider.name, failure.kind)
                        break
                    if (failure.retry_after or 0.0) > self._backoff.max_seconds:
                        # It asked for a longer wait than any we make: another provider now,
                        # rather than a retry it said would come too early.
                        failed = (provider.name, failure.kind)
                        break
                    delay = self._backoff.delay(attempt - 1, failure.retry_after, self._rng)
                    if deadline is not None and time.monotonic() + delay >= deadline:
                        failed = (provider.name, failure.kind)
                        break
                    await self._sleep(delay)
                    continue
                except BaseException:
                    breaker.release()
                    raise
                if spent.stop == STOP_OUTPUT_LIMIT and len(delivered) == produced:
                    # A whole output cap and nothing new: a reasoning model that spent it
                    # thinking, or a continuation that only repeated the text. The same call
                    # again would do the same and cost as much: the next provider goes on.
                    breaker.release()  # a verdict on this text, not on the provider's health
                    exhausted = ProviderFailure(
                        provider.name,
                        OUTPUT_EXHAUSTED,
                        "stopped at its output cap without writing anything new",
                    )
                    log.warning("%s stage: %s", stage, exhausted)
                    failures[provider.name] = exhausted
                    failed = (provider.name, OUTPUT_EXHAUSTED)
                    break
                breaker.record_success()
                failures.pop(provider.name, None)  # what it asked before is answered
                if spent.stop != STOP_OUTPUT_LIMIT:
                    return
                if continuations >= MAX_CONTINUATIONS:
                    log.warning(
                        "%s stage: %s stopped at its output cap %d times; the text ends there",
                        stage,
                        provider.name,
                        continuations + 1,
                    )
                    self._metrics.provider_texts_cut.labels(provider.name, stage).inc()
                    return
                # Cut at the output cap: the same provider writes the rest, as a new call.
                continuations += 1
                attempt = 0
                unfinished = (provider.name, STOP_OUTPUT_LIMIT)
            else:
                if unfinished is not None and failed is None:
                    # Its breaker opened (other calls) while this call was to go on with it
                    # (after a lost worker, or to write on past the output cap): the next
                    # provider takes over, announced as any switch.
                    failed = unfinished
                elif failed is None or failed[0] != provider.name:
                    log.info("%s stage: skipping %s, its breaker is open", stage, provider.name)
        raise self._chain_failed(chain, failures)

    def _chain_failed(
        self, chain: Sequence[Provider], failures: dict[str, ProviderFailure]
    ) -> ServiceError:
        """The error a call ends with when no provider of `chain` could finish it.

        When every provider last failed on the request itself (`FINAL_KINDS`), another try
        would fail alike and cost as much: FAILED_PRECONDITION, not to be retried. Else
        UNAVAILABLE, retried after the soonest wait of a provider that may take the call
        then: the longer of its last Retry-After and its breaker's cool-down.
        """
        kinds = {p.name: failures[p.name].kind if p.name in failures else "" for p in chain}
        if kinds and all(kind in FINAL_KINDS for kind in kinds.values()):
            summary = "; ".join(f"{name}: {kind}" for name, kind in kinds.items())
            if all(kind == REFUSED for kind in kinds.values()):
                return FailedPrecondition(
                    "every language-model provider refused to write this (a refusal or a"
                    " content filter); retrying the same request will not change that",
                    reason="CONTENT_REFUSED",
                )
            return FailedPrecondition(
                "no language-model provider can take this request as it stands"
                f" ({summary}); retrying the same request will not change that",
                reason="REQUEST_REFUSED",
            )
        waits = [
            max(
                (failures[p.name].retry_after or 0.0) if p.name in failures else 0.0,
                self.breakers[p.name].seconds_until_half_open() or 0.0,
            )
            for p in chain
            if kinds[p.name] not in FINAL_KINDS
        ]
        return Unavailable(
            "no language-model provider could write this; retry later",
            reason="PROVIDERS_UNAVAILABLE",
            retry_after=max(1.0, min(waits, default=1.0)),
        )

    async def _switch(
        self, failed: tuple[str, str], to: str, offset: int, on_switch: SwitchListener | None
    ) -> None:
        source, reason = failed
        self._metrics.provider_fallbacks.labels(source, to, str(offset > 0).lower()).inc()
        if on_switch is not None:
            await on_switch(source, to, reason, offset)

    async def _attempt(
        self,
        stage: str,
        provider: Provider,
        prompt: Prompt,
        delivered: str,
        spent: TokenUsage,
        usage: dict[tuple[str, str], UsageTotal],
        deadline: float | None,
    ) -> AsyncGenerator[str, None]:
        """One call to one provider, bounded by the timeouts; yields deliverable text. `spent`
        gets what the provider reported, how its text ended among it."""
        call_prompt = replace(prompt, partial=delivered) if delivered else prompt
        # Only a continuation can repeat delivered text: a first call's chunks go as they are,
        # and so do those of a continuation the provider says it wrote on exactly (a prefill).
        trimmer = OverlapTrimmer(delivered) if delivered else None
        raw: list[str] = []
        outcome = "cancelled"
        started = time.monotonic()
        iterator = provider.stream(call_prompt, spent).__aiter__()
        watchdog = _Watchdog(self._config, deadline)
        try:
            while True:
                # The watchdog's wait is written out here, not a coroutine of its own: this
                # runs once per chunk, and a model hands over one token per chunk.
                watchdog.begin(first=not raw)
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    expired = watchdog.expiry()
                    if expired is None:
                        raise
                    if spent.stop:
                        break  # the text was complete: only the rest of its body was late
                    raise expired from None
                except TimeoutError:
                    if spent.stop:
                        break  # the provider's own timeout, as above
                    raise watchdog.timeout() from None  # the provider's own, same outcome
                finally:
                    watchdog.end()
                if not chunk:
                    continue
                if not raw:
                    self._metrics.time_to_first_token.labels(provider.name, stage).observe(
                        time.monotonic() - started
                    )
                    if spent.exact_continuation:
                        trimmer = None  # written on from the partial's end: nothing repeats
                raw.append(chunk)
                if trimmer is None:
                    yield chunk
                elif text := trimmer.feed(chunk):
                    yield text
            if trimmer is not None and (text := trimmer.finish()):
                yield text
            outcome = "ok"
        except _Expired as expired:
            outcome = expired.kind
            raise ProviderFailure(
                provider.name, expired.kind, f"no token for {expired.limit:.1f}s"
            ) from None
        except ProviderFailure as failure:
            outcome = failure.kind
            raise
        finally:
            watchdog.close()
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()
            self._metrics.provider_requests.labels(provider.name, outcome).inc()
            self._account(call_prompt, provider, spent, "".join(raw), usage, outcome == "ok")

    def _account(
        self,
        prompt: Prompt,
        provider: Provider,
        spent: TokenUsage,
        output: str,
        usage: dict[tuple[str, str], UsageTotal],
        finished: bool,
    ) -> None:
        if not spent.reported:
            if not output:
                return  # nothing came back: nothing known to be spent
            spent.input_tokens = token_count(prompt.system + prompt.user + prompt.partial)
            spent.output_tokens = token_count(output)
        elif not finished:
            # A cut stream's count is the one reported before the cut (Anthropic's
            # message_start says 1): the text that came says more.
            spent.output_tokens = max(spent.output_tokens, token_count(output))
        total = usage.setdefault(
            (provider.name, provider.model), UsageTotal(provider.name, provider.model)
        )
        total.input_tokens += spent.input_tokens
        total.output_tokens += spent.output_tokens
        self._metrics.tokens.labels(provider.name, "in").inc(spent.input_tokens)
        self._metrics.tokens.labels(provider.name, "out").inc(spent.output_tokens)


class _Expired(Exception):
    """A wait for the model's next chunk ran out of time."""

    def __init__(self, kind: str, limit: float) -> None:
        super().__init__(kind)
        self.kind = kind
        self.limit = limit


class _Watchdog:
    """Bounds each wait for a model chunk with one timer per attempt, not one per chunk.

    A wait (`begin` … `end`, around the attempt's await of the next chunk) records when
    it must end (a float, no timer); the one timer is re-armed only when it fires early
    (a wait that began later, or none running). On expiry it cancels the waiting task,
    and the attempt turns that cancellation into `_Expired` (`expiry`) — unless
    something else cancelled the task too, which then wins.
    Only time spent waiting for the model counts; the consumer's time between
    chunks does not (the task is cancelled only while it waits here).
    """

    __slots__ = (
        "_cancelling",
        "_deadline",
        "_due",
        "_expired",
        "_first_limit",
        "_handle",
        "_idle_limit",
        "_kind",
        "_limit",
        "_loop",
        "_task",
        "_waiting",
    )

    def __init__(self, config: RouterConfig, deadline: float | None) -> None:
        self._first_limit = (config.first_token_timeout_seconds, "first_token_timeout")
        self._idle_limit = (config.idle_timeout_seconds, "idle_timeout")
        self._deadline = float("inf") if deadline is None else deadline
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._waiting = False
        self._expired = False
        self._cancelling = 0
        self._due = 0.0
        self._limit = 0.0
        self._kind = ""

    def begin(self, *, first: bool) -> None:
        """A wait for the model's next chunk begins, on the current task: within the time to
        first token or the idle time (and the deadline). Once per chunk, so kept lean."""
        now = time.monotonic()
        limit, kind = self._first_limit if first else self._idle_limit
        due = now + limit
        if due > self._deadline:
            due = max(now, self._deadline)
            limit, kind = due - now, "deadline"
        self._due, self._limit, self._kind = due, limit, kind
        task = self._task = asyncio.current_task(self._loop)
        # As asyncio.timeout: cancellations of the task from before this wait are not ours.
        self._cancelling = task.cancelling() if task is not None else 0
        if self._handle is None:
            self._arm(due, now)
        self._waiting = True

    def expiry(self) -> _Expired | None:
        """On a cancellation of the wait: the expiry to raise instead when the watchdog's own
        cancellation was the only one, else None (the cancellation stands)."""
        return self.timeout() if self._settle() else None

    def timeout(self) -> _Expired:
        """The expiry of the current wait."""
        return _Expired(self._kind, self._limit)

    def end(self) -> None:
        """The wait ended, however it did."""
        self._waiting = False
        if self._expired:
            self._settle()  # the step swallowed our cancellation: take it back all the same

    def _settle(self) -> bool:
        """Take back the watchdog's cancellation; whether it was the only one (a timeout)."""
        if not self._expired or self._task is None:
            return False
        self._expired = False
        # As asyncio.timeout: another cancellation of the task wins over ours.
        return self._task.uncancel() <= self._cancelling

    def _arm(self, due: float, now: float) -> None:
        # Deadlines are time.monotonic() instants; the loop's clock may differ in origin.
        self._handle = self._loop.call_at(self._loop.time() + max(0.0, due - now), self._fire)

    def _fire(self) -> None:
        self._handle = None
        now = time.monotonic()
        if self._waiting and now >= self._due:
            if self._task is not None and not self._task.done():
                self._expired = True
                self._task.cancel()
            return
        # Not due yet, or between waits: look again when the current (or a next) wait can end.
        self._arm(self._due if self._waiting else now + self._limit, now)

    def close(self) -> None:
        """Drop the timer (the attempt ended)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
