"""A circuit breaker per provider: opens after repeated failures, half-opens after a cool-down.

Closed lets every call through. `failure_threshold` consecutive failures open
it: calls are refused for `cooldown_seconds`. Then it is half-open: one trial
call goes through; its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.IntEnum):
    """Breaker states; the value is what the `scriptgen_provider_breaker_state` gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """The breaker of one provider. Not thread-safe: used from one event loop."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self._threshold = max(1, failure_threshold)
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    def _set(self, state: BreakerState) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(self.name, state)

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose cool-down passed reads (and turns) half-open."""
        if self._state == BreakerState.OPEN and self._clock() >= self._opened_at + self._cooldown:
            self._trial_running = False
            self._set(BreakerState.HALF_OPEN)
        return self._state

    @property
    def usable(self) -> bool:
        """Whether a call could be let through now (without claiming the half-open trial)."""
        state = self.state
        return state == BreakerState.CLOSED or (
            state == BreakerState.HALF_OPEN and not self._trial_running
        )

    def seconds_until_half_open(self) -> float | None:
        """Time left in the cool-down of an open breaker; None when not open."""
        if self.state != BreakerState.OPEN:
            return None
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def allow(self) -> bool:
        """Whether a call may go now; in half-open, the caller holds the single trial."""
        state = self.state
        if state == BreakerState.CLOSED:
            return True
        if state == BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded: close the breaker."""
        self._failures = 0
        self._trial_running = False
        self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A call failed: count it; open at the threshold, or at once from half-open."""
        self._failures += 1
        self._trial_running = False
        if self._state == BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def release(self) -> None:
        """A call ended without a verdict (cancelled): free the half-open trial."""
        self._trial_running = False
