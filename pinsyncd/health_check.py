"""`pinsyncd status --check`: the one command a monitoring check or a desktop notifier calls.
From the `status --json` document, one line per problem, each with the exit code it calls
for (`pinsyncd.exits`): a service paused, failing or not synced for `max_age`, pins stuck in
queued or pinning past `stuck_after`, pins failed for good, a daemon that says it is
unhealthy. Pure: the document and the time are given."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pinsyncd.durations import format_duration
from pinsyncd.exits import EX_INCOMPLETE, EX_UNAVAILABLE, Problem


def default_max_age(interval: float) -> float:
    """How long a service may go without a good cycle when not told (`--max-age`): two
    `sync.interval`s, and at least 10 minutes, since a first backup of many pins is one long
    cycle."""
    return max(2 * interval, 600.0)


def check(status: dict[str, Any], *, now: float, max_age: float) -> list[Problem]:
    found: list[Problem] = []
    daemon = status.get("daemon")
    if isinstance(daemon, dict) and daemon.get("healthy") is False:
        found.append(Problem(f"daemon: unhealthy: {daemon.get('reason')}", EX_UNAVAILABLE))
    stuck_after = format_duration(float(status.get("stuck_after", 3600)))
    for name, s in status["services"].items():
        found += _service(name, s, now=now, max_age=max_age, stuck_after=stuck_after)
    return found


def _service(
    name: str, s: dict[str, Any], *, now: float, max_age: float, stuck_after: str
) -> list[Problem]:
    found: list[Problem] = []
    last = _seconds(s.get("last_cycle"))
    down = _seconds(s.get("down_since"))
    if s.get("paused"):
        found.append(Problem(f"{name}: {_paused(s['paused'])}", EX_UNAVAILABLE))
    elif down is not None and now - down >= max_age:
        why = f": {s['last_error']}" if s.get("last_error") else ""
        found.append(
            Problem(f"{name}: no good cycle for {format_duration(now - down)}{why}", EX_UNAVAILABLE)
        )
    if last is None:
        found.append(
            Problem(f"{name}: never synced (is the daemon or the timer running?)", EX_UNAVAILABLE)
        )
    elif now - last >= max_age:
        found.append(
            Problem(
                f"{name}: last cycle {format_duration(now - last)} ago, more than "
                f"{format_duration(max_age)} (is the daemon or the timer running?)",
                EX_UNAVAILABLE,
            )
        )
    if s.get("stuck"):
        found.append(
            Problem(
                f"{name}: {s['stuck']} pin{_s(s['stuck'])} queued or pinning for over "
                f"{stuck_after}",
                EX_INCOMPLETE,
            )
        )
    if s.get("failed_for_good"):
        n = s["failed_for_good"]
        found.append(
            Problem(
                f"{name}: {n} pin{_s(n)} failed for good (`pinsyncd status --failed`)",
                EX_INCOMPLETE,
            )
        )
    return found


def _seconds(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def _s(count: int) -> str:
    return "s" * (count != 1)


def _paused(reason: str) -> str:
    return reason if reason.startswith("paused") else f"paused: {reason}"
