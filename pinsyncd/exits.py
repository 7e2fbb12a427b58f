"""pinsyncd's exit codes, one table for every command, its `--help` and the README: what a
cron job, a systemd timer or a monitoring check can tell apart without reading the output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EX_OK = 0
"""Done: every pin is pinned (or on its way, without `--wait`); a check found nothing."""
EX_FAILED = 1
"""Could not run: bad arguments, the state file, an internal error (one line says why)."""
EX_INCOMPLETE = 3
"""Ran, but not everything is safe: pins `failed` (or failed for good), some still pending
when `--timeout` ended, a restore with pins missing, a service that cannot serve what it
says it has pinned. As restic uses 3 for "incomplete"."""
EX_UNAVAILABLE = 69
"""The node or a service could not be used: unreachable, erroring, paused (token refused,
no funds) or rate-limited; or, for `status --check`, a service with no good cycle lately.
It wins over EX_INCOMPLETE: fix it first (sysexits.h EX_UNAVAILABLE)."""
EX_LOCKED = 75
"""Another pinsyncd holds the state file; try later (sysexits.h EX_TEMPFAIL)."""
EX_CONFIG = 78
"""A config error; the unit sets RestartPreventExitStatus=78 (sysexits.h EX_CONFIG)."""
EX_INTERRUPTED = 130
"""Interrupted (Ctrl-C); 143 for SIGTERM where a command stops cleanly on it."""

TABLE: tuple[tuple[int, str], ...] = (
    (EX_OK, "done: every pin pinned (or sent, without --wait); nothing found by a check"),
    (EX_FAILED, "could not run (bad arguments, the state file, an internal error)"),
    (EX_INCOMPLETE, "incomplete: pins failed or still pending, a restore with pins missing"),
    (EX_UNAVAILABLE, "the node or a service unreachable, erroring, paused or rate-limited"),
    (EX_LOCKED, "another pinsyncd holds the state file"),
    (EX_CONFIG, "config error"),
    (EX_INTERRUPTED, "interrupted"),
)


def epilog() -> str:
    """The table for `--help`."""
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in TABLE)


@dataclass(frozen=True)
class Problem:
    """One thing that went wrong, and the exit code it calls for."""

    text: str
    code: int


def verdict(found: Sequence[Problem]) -> tuple[int, str | None]:
    """The exit code (the gravest problem's) and the one line that says why."""
    if not found:
        return EX_OK, None
    return max(p.code for p in found), "; ".join(p.text for p in found)
