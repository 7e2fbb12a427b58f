"""What `pinsyncd status` reports: per service, how many of the node's pins are pinned,
queued, pinning, failed or not yet sent, read from the state file (safely beside a running
daemon: WAL readers never block the writer)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pinsyncd.state import COUNTS_SQL, UNSENT_SQL, StateError

STATUSES = ("pinned", "pinning", "queued", "failed")


def read_status(
    state_path: Path, services: Sequence[str], *, max_attempts: int = 5
) -> dict[str, Any]:
    """The `status --json` document. A state file that does not exist yet reads as empty."""
    result: dict[str, Any] = {"services": {}, "local": {"pins": 0, "last_cycle": None}}
    db = _connect(state_path)
    try:
        for name in services:
            result["services"][name] = _service(db, name, max_attempts) if db else _empty()
        if db:
            (pins,) = db.execute("SELECT COUNT(*) FROM local_pins").fetchone()
            row = db.execute("SELECT value FROM meta WHERE key='last_cycle'").fetchone()
            result["local"] = {"pins": pins, "last_cycle": _iso(float(row[0])) if row else None}
    finally:
        if db:
            db.close()
    return result


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    db = sqlite3.connect(path, timeout=10)
    try:
        db.execute("PRAGMA query_only=1")
        db.execute("SELECT 1 FROM remote_pins LIMIT 1")
    except sqlite3.OperationalError as exc:
        db.close()
        if "no such table" in str(exc):  # created but not migrated yet
            return None
        raise StateError(f"cannot read the state file {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StateError(
            f"the state file {path} is damaged or not a pinsyncd file: {exc}"
        ) from None
    return db


def _empty() -> dict[str, Any]:
    return {
        **dict.fromkeys(STATUSES, 0),
        "unsent": 0,
        "sending": 0,
        "failed_for_good": 0,
        "last_cycle": None,
        "last_error": None,
        "paused": None,
        "paused_until": None,
    }


def _service(db: sqlite3.Connection, name: str, max_attempts: int) -> dict[str, Any]:
    out = _empty()
    (out["failed_for_good"],) = db.execute(
        "SELECT COUNT(*) FROM remote_pins WHERE service=? AND status='failed' AND attempts>=?",
        (name, max_attempts),
    ).fetchone()
    for status, count in db.execute(COUNTS_SQL, (name,)):
        if status in STATUSES:
            out[status] = count
        elif status == "intent":
            out["sending"] = count
    (out["unsent"],) = db.execute(UNSENT_SQL, (name,)).fetchone()
    row = db.execute(
        "SELECT last_cycle, last_error, paused_until, pause_reason FROM services WHERE name=?",
        (name,),
    ).fetchone()
    if row:
        last_cycle, last_error, paused_until, pause_reason = row
        out["last_cycle"] = _iso(last_cycle) if last_cycle else None
        out["last_error"] = last_error
        if pause_reason and paused_until and paused_until > datetime.now(UTC).timestamp():
            out["paused"] = pause_reason
            out["paused_until"] = _iso(paused_until)
    return out


def read_failed(state_path: Path, services: Sequence[str]) -> list[dict[str, Any]]:
    """Every pin a service marked failed, with the service's reason, for `status --failed`."""
    db = _connect(state_path)
    if db is None:
        return []
    try:
        rows = db.execute(
            "SELECT service, cid, name, attempts, details, requestid, next_attempt "
            "FROM remote_pins WHERE status='failed' ORDER BY service, cid"
        ).fetchall()
    finally:
        db.close()
    wanted = set(services)
    return [
        {
            "service": service,
            "cid": cid,
            "name": name,
            "attempts": attempts,
            "reason": details,
            "requestid": requestid,
            "next_try": _iso(next_attempt) if next_attempt else None,
        }
        for service, cid, name, attempts, details, requestid, next_attempt in rows
        if service in wanted
    ]


def render_failed(failed: Sequence[dict[str, Any]]) -> str:
    if not failed:
        return "no failed pins"
    lines = []
    for row in failed:
        lines.append(
            f"{row['service']}  {row['cid']}  attempts {row['attempts']}, next try "
            f"{row['next_try'] or 'at the next cycle'}: {row['reason'] or '(no reason given)'}"
        )
    return "\n".join(lines)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def render_table(status: dict[str, Any]) -> str:
    """A readable table, one line per service."""
    columns = ("pinned", "pinning", "queued", "failed", "unsent")
    names = list(status["services"])
    width = max([len("service"), *(len(n) for n in names)])
    lines = [f"{'service':<{width}}  " + "  ".join(f"{c:>7}" for c in columns) + "  last cycle"]
    for name in names:
        s = status["services"][name]
        counts = "  ".join(f"{s[c]:>7}" for c in columns)
        lines.append(f"{name:<{width}}  {counts}  {s['last_cycle'] or 'never'}")
        if s["failed_for_good"]:
            lines.append(
                f"{'':<{width}}  {s['failed_for_good']} failed for good "
                "(pinsyncd status --failed shows why)"
            )
        if s["sending"]:
            lines.append(f"{'':<{width}}  {s['sending']} being sent (outcome not yet known)")
        if s["paused"]:
            lines.append(f"{'':<{width}}  {s['paused']} (next try {s['paused_until']})")
        elif s["last_error"]:
            lines.append(f"{'':<{width}}  last error: {s['last_error']}")
    local = status["local"]
    lines.append(f"local node: {local['pins']} pins, last cycle {local['last_cycle'] or 'never'}")
    return "\n".join(lines)
