"""Ages that must not move when the wall clock does.

An `intent` (an add that may have been sent) is looked up only once it is older than its
grace: looked up too soon, the service may still be handling it, and it would be added a
second time. `time.time()` jumps when NTP steps the clock or a laptop wakes with a wrong one,
so such ages are measured on the boot clock (CLOCK_BOOTTIME: seconds since boot, suspend
included, never stepped). A row carries a `stamp`, "<boot id>@<boot seconds>", of when it
was last written. In the same boot its age is exact, across restarts too. A row from an
earlier boot is at least as old as this boot, and that is the age it is given, so a clock
that moved forward can never shorten a grace, and one that moved back never stalls it by
more than the grace after boot.
"""

from __future__ import annotations

import time
from pathlib import Path

_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _read_boot_id() -> str:
    try:
        return _BOOT_ID_FILE.read_text().strip()
    except OSError:  # not Linux: every start counts as a new boot, the safe side
        return f"process-{time.time_ns()}"


BOOT_ID = _read_boot_id()


def boot_seconds() -> float:
    """Seconds since this machine booted (suspend included)."""
    return time.clock_gettime(_CLOCK)


def stamp() -> str:
    """The stamp of a row written now."""
    return f"{BOOT_ID}@{boot_seconds():.3f}"


def age(row_stamp: str | None) -> float:
    """How long ago a row with `row_stamp` was written, never more than is certain: for a row
    of another boot (or without a stamp, from before stamps), the time since this boot."""
    now = boot_seconds()
    boot, _, seconds = (row_stamp or "").partition("@")
    if boot != BOOT_ID:
        return now
    try:
        return max(0.0, now - float(seconds))
    except ValueError:
        return now
