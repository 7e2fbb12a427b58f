"""What needs a person's attention, read from the status document (`read_status`, the same
one `pinsyncd status --json` and `/status` show). Pure: a document in, conditions out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pinsyncd.durations import format_duration
from pinsyncd.outcomes import PAUSED, Hold, hold_of


@dataclass(frozen=True)
class Condition:
    """One problem that holds now. `key` names it across runs (its kind and service);
    `text` says it, without any secret (the state's texts are scrubbed when written)."""

    key: str
    title: str
    text: str


def conditions(status: Mapping[str, Any]) -> list[Condition]:
    """Every problem the document shows: a service paused, pins stuck (queued or pinning
    past `stuck_after`), pins failed for good, and a restore drill that found a service
    could not serve a CID it says is pinned."""
    found = []  # a backoff or a Retry-After ends on its own: not a person's problem
    stuck_after = format_duration(float(status.get("stuck_after", 3600.0)))
    for name, service in status.get("services", {}).items():
        if service.get("paused") and hold_of(service["paused"]) is Hold.PAUSED:
            until = service.get("paused_until") or "further notice"
            found.append(
                Condition(
                    f"paused:{name}",
                    f"pinsyncd: {name} is paused",
                    f"Nothing is sent to {name} until {until}: "
                    + service["paused"].removeprefix(PAUSED),
                )
            )
        if stuck := service.get("stuck", 0):
            found.append(
                Condition(
                    f"stuck:{name}",
                    f"pinsyncd: {stuck} pins stuck on {name}",
                    f"{stuck} pins have been queued or pinning on {name} for over "
                    f"{stuck_after}: the service fetches them from your node, which must be "
                    "online and reachable. See `pinsyncd ls --service "
                    f"{name} --status queued,pinning`.",
                )
            )
        if failed := service.get("failed_for_good", 0):
            found.append(
                Condition(
                    f"failed:{name}",
                    f"pinsyncd: {failed} pins failed for good on {name}",
                    f"{failed} pins failed for good on {name} and are tried only now and "
                    "then. `pinsyncd status --failed` shows the service's reasons; `pinsyncd "
                    f"retry --service {name}` tries them again.",
                )
            )
    drill = status.get("drill") or {}
    for name, entry in (drill.get("services") or {}).items():
        if missing := entry.get("not_fetched", 0):
            found.append(
                Condition(
                    f"drill:{name}",
                    f"pinsyncd: restore drill failed on {name}",
                    f"The restore drill of {entry.get('time', 'the last run')} could not fetch "
                    f"{missing} CIDs from {name}, which says it has them pinned. See "
                    "`pinsyncd status`.",
                )
            )
    return found
