"""Retrying whole store operations with exponential backoff and jitter.

botocore already retries single HTTP requests, but not everything: its
"standard" mode stops once its per-client retry quota is spent (which a
minute-long outage does), a multipart transfer that loses a part gives up
as a whole, and a body that breaks mid-read is not retried.  This loop sits
around a complete operation (one put, one listing, one copy) so that a
restarting endpoint is bridged, and it always ends: `attempts` is finite.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the n-th wait is in [d/2, d], d = min(max_delay, base_delay·2ⁿ⁻¹).

    "Equal jitter" rather than full jitter: clients still spread out, but the
    total wait has a known lower bound, so a budget can be sized to outlast a
    restart (and an upper bound, so a dead endpoint fails in bounded time).
    """

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(f"invalid retry policy {self}")

    def delay(self, failures: int, rand: float) -> float:
        """Wait after the `failures`-th failure; `rand` is uniform in [0, 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (failures - 1))
        return ceiling / 2 * (1 + rand)

    def max_total_delay(self) -> float:
        return sum(self.delay(n, 1.0) for n in range(1, self.attempts))

    def min_total_delay(self) -> float:
        """The least time all retries wait together (every jitter at its floor)."""
        return sum(self.delay(n, 0.0) for n in range(1, self.attempts))

    @classmethod
    def outlasting(cls, seconds: float, *, base_delay: float = 0.2, max_delay: float = 10.0) -> "RetryPolicy":
        """The fewest attempts whose waits add up to at least ``seconds``
        whatever the jitter: a budget that bridges an outage that long."""
        policy = cls(1, base_delay, max_delay)
        while policy.min_total_delay() < seconds:
            if base_delay <= 0 or max_delay <= 0:
                raise ValueError(f"no retry policy with zero delays outlasts {seconds}s")
            policy = cls(policy.attempts + 1, base_delay, max_delay)
        return policy


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error; `last` is the final one."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"{attempts} attempts, last error: {last!r}")
        self.attempts = attempts
        self.last = last


def retry_call(fn: Callable[[], T], *, policy: RetryPolicy,
               retryable: Callable[[BaseException], bool],
               on_retry: Callable[[int, BaseException, float], None] | None = None,
               sleep: Callable[[float], None] = time.sleep,
               rand: Callable[[], float] = random.random) -> T:
    """Call `fn` until it returns; non-retryable errors propagate at once."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not retryable(exc):
                raise
            if attempt == policy.attempts:
                raise RetriesExhausted(attempt, exc) from exc
            wait = policy.delay(attempt, rand())
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)
    raise AssertionError("unreachable")
