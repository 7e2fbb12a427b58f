"""What to send, and when. A problem is told once when it starts, again every `repeat` while
it lasts, and once when it is over; two messages about one problem are never closer than
`GAP` (a problem that comes and goes every few minutes is told when it has settled, not each
time). Pure, the clock given. The ledger (a JSON object kept in the state) says what was
told last, so a restart does not tell it all again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pinsyncd.alerts.conditions import Condition

GAP = 600.0
"""Seconds between two messages about one problem, at least."""


@dataclass(frozen=True)
class Alert:
    key: str
    kind: str  # "problem", "reminder" or "resolved"
    title: str
    text: str


def decide(
    ledger: Mapping[str, Any], found: Iterable[Condition], *, now: float, repeat: float
) -> tuple[list[Alert], dict[str, dict[str, Any]]]:
    """The alerts to send now, and the ledger once they are delivered. An entry is
    `{"told": "problem" | "ok", "last": when, "title", "text"}`."""
    holding = {c.key: c for c in found}
    alerts: list[Alert] = []
    after: dict[str, dict[str, Any]] = {}
    for key in sorted({*holding, *ledger}):
        entry = ledger.get(key)
        entry = dict(entry) if isinstance(entry, dict) else {"told": "ok", "last": None}
        last = entry.get("last")
        quiet = last is None or now - float(last) >= GAP
        condition = holding.get(key)
        if condition is not None:
            entry.update(title=condition.title, text=condition.text)
            if entry.get("told") != "problem" and quiet:
                alerts.append(Alert(key, "problem", condition.title, condition.text))
                entry.update(told="problem", last=now)
            elif entry.get("told") == "problem" and now - float(last or 0.0) >= repeat:
                alerts.append(Alert(key, "reminder", condition.title, condition.text))
                entry["last"] = now
        elif entry.get("told") == "problem":
            if quiet:
                title = f"resolved: {entry.get('title', key)}"
                alerts.append(Alert(key, "resolved", title, "It no longer holds."))
                entry.update(told="ok", last=now)
        elif quiet:
            continue  # over and told: forgotten
        after[key] = entry
    return alerts, after


def keep_undelivered(
    alerts: Iterable[Alert], delivered: set[str], before: Mapping[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    """The ledger when some alerts could not be delivered: their entries stay as they were
    (or absent), so they are tried again at the next look."""
    kept = dict(after)
    for alert in alerts:
        if alert.key in delivered:
            continue
        if alert.key in before:
            kept[alert.key] = before[alert.key]
        else:
            kept.pop(alert.key, None)
    return kept
