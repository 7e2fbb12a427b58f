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

The other times that decide when to act again (a pause a server asked for, a failed pin's
next try, since when a service is down, for failover, and when a pin left the node, for the
unpin grace) are Unix times in the state, shown by `status`. Within a process they are read
off `now()`: the wall clock at the process's start, moved on by the boot clock, so a step of
the wall clock while pinsyncd runs moves none of them. Across restarts they are plain Unix
times (the state cannot know how much of a step happened while nothing ran).
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


_WALL_AT_START = time.time()
_BOOT_AT_START = boot_seconds()


def now() -> float:
    """Unix time that, within this process, moves with the boot clock: the wall clock at the
    start plus the boot seconds since. NTP stepping the clock, or a laptop that wakes with a
    wrong one, does not move it; suspend does (the boot clock counts it)."""
    return _WALL_AT_START + (boot_seconds() - _BOOT_AT_START)
