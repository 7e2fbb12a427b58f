"""Retry timing: exponential backoff with full jitter and a cap (the wait after the n-th
failure is uniform in [0, min(cap, base * 2**(n-1))]), and when a pin that keeps failing on a
service counts as failed for good."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pinsyncd.config import RetryConfig
from pinsyncd.model import DEFAULT_MAX_ATTEMPTS


def backoff_delay(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after `attempts` consecutive failures (attempts >= 1)."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return (rng or random).uniform(0, ceiling)


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 30.0
    cap: float = 3600.0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    failed_retry: float = 86400.0

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryPolicy:
        return cls(config.base, config.cap, config.max_attempts, config.failed_retry)

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        return backoff_delay(attempts, base=self.base, cap=self.cap, rng=rng)

    def after_failed(self, attempts: int, rng: random.Random | None = None) -> float:
        """The wait before replacing a pin the service marked failed after `attempts` tries."""
        if attempts >= self.max_attempts:
            return self.failed_retry
        return self.delay(attempts, rng)
