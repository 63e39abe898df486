"""A circuit breaker for the LLM API: after repeated failed turns, stop calling it for a while.

Closed: calls go through and failures are counted. Open: calls are refused until the cool-down
ends, so a broken or rate-limited API is not hammered while every turn waits for its deadline.
Half-open: one trial call decides whether to close again or reopen for another cool-down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 3
    cooldown_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if self.cooldown_seconds < 0:
            raise ValueError("cooldown_seconds cannot be negative")


class CircuitBreaker:
    def __init__(
        self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or BreakerConfig()
        self.clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self.clock() - self._opened_at >= self.config.cooldown_seconds:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """Whether a call may go out now. In half-open state only one trial at a time."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_in_flight or self._failures >= self.config.failure_threshold:
            self.trip()

    def trip(self) -> None:
        """Open now, e.g. for a rejected API key that no retry will fix."""
        self._opened_at = self.clock()
        self._trial_in_flight = False
        self._failures = 0
        self.opened_count += 1
