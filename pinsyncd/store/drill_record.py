"""The kept result of the last restore drill (`pinsyncd check --retrieval`): a small JSON file
beside the state file, `<state>.drill.json`, so the drill needs no lock on the state file.

It is written whole, to a temporary file renamed over the old one, so a reader (`status`,
`/status`, `/metrics`) sees the previous record or the new one, never half of one. Each
service's entry carries its own time: a drill of one service (`--service`) replaces that
service's entry and keeps the others'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pinsyncd.files import write_whole

RECORD_VERSION = 1
MAX_RECORD = 4 * 2**20
"""The most of a record file that is read (a record lists at most a few hundred CIDs)."""


def drill_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".drill.json")


def write_drill(state_path: Path, entries: Mapping[str, Mapping[str, Any]], when: float) -> Path:
    """Keep `entries` (service name -> its entry) as the last drill of those services, beside
    the other services' entries from earlier drills; the path written."""
    path = drill_path(state_path)
    services = dict(_read_services(path))
    services.update({name: dict(entry) for name, entry in entries.items()})
    document = {"version": RECORD_VERSION, "time": when, "services": services}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, json.dumps(document, indent=1, sort_keys=True), mode=0o600)
    return path


def read_drill(state_path: Path, services: Sequence[str]) -> dict[str, Any] | None:
    """The last drill of each configured service that had one: `{"time", "timestamp",
    "services": {name: entry}}`, each entry with its own `time` (ISO 8601) and `timestamp`
    (Unix seconds); None when no drill was kept. A record that cannot be read counts as
    none: it is a report, and the next drill writes a new one."""
    entries = _read_services(drill_path(state_path))
    kept = {name: _dated(entries[name]) for name in services if name in entries}
    if not kept:
        return None
    latest = max(e["timestamp"] for e in kept.values())
    return {"time": _iso(latest), "timestamp": latest, "services": kept}


def _read_services(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with open(path, "rb") as source:
            data = source.read(MAX_RECORD + 1)
    except OSError:
        return {}
    if len(data) > MAX_RECORD:
        return {}
    try:
        document = json.loads(data)
    except ValueError:
        return {}
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict):
        return {}
    return {
        str(name): entry
        for name, entry in services.items()
        if isinstance(entry, dict) and isinstance(entry.get("time"), int | float)
    }


def _dated(entry: Mapping[str, Any]) -> dict[str, Any]:
    timestamp = float(entry["time"])
    return {**entry, "time": _iso(timestamp), "timestamp": timestamp}


def _iso(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "1970-01-01T00:00:00+00:00"
