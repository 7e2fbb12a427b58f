"""Exponential backoff with full jitter and a cap (the AWS architecture blog's "full jitter"):
the wait after the n-th failure is uniform in [0, min(cap, base * 2**(n-1))]."""

from __future__ import annotations

import random


def backoff_delay(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after `attempts` consecutive failures (attempts >= 1)."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return (rng or random).uniform(0, ceiling)
