"""What `pinsyncd status` says about `pinsyncd serve` on this machine: its requests by account
and status, its pins held in Kubo, and whether it runs, read from its state file alone
(read-only, beside a running `serve`, as the daemon's status is)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from pinsyncd.lock import StateLock

STATUSES = ("pinned", "pinning", "queued", "failed")


def read_serve_status(path: Path, accounts: list[str]) -> dict[str, Any]:
    """{"state": path, "running": pid or None, "accounts": {name: {status: n}}, "held":
    {state: n}}; an account of the config without requests shows zeros."""
    counts: dict[str, dict[str, int]] = {a: dict.fromkeys(STATUSES, 0) for a in accounts}
    held: dict[str, int] = {}
    holder = StateLock(path).holder()
    status: dict[str, Any] = {"state": str(path), "running": holder.pid if holder else None}
    if path.exists():
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                for account, state, count in db.execute(
                    "SELECT account, status, COUNT(*) FROM requests GROUP BY account, status"
                ):
                    counts.setdefault(account, dict.fromkeys(STATUSES, 0))[state] = int(count)
                held = {
                    state: int(n)
                    for state, n in db.execute("SELECT state, COUNT(*) FROM held GROUP BY state")
                }
            finally:
                db.close()
        except sqlite3.Error as exc:
            return {**status, "error": f"cannot read it: {exc}"}
    return {**status, "accounts": counts, "held": held}


def serve_lines(status: dict[str, Any]) -> list[str]:
    """The status as lines for a person."""
    pid = status["running"]
    if "error" in status:
        return [f"serve: state {status['state']}: {status['error']}"]
    lines = [
        f"serve: {'running (pid ' + str(pid) + ')' if pid else 'not running'}; "
        f"state {status['state']}"
    ]
    for account, counts in sorted(status["accounts"].items()):
        parts = ", ".join(f"{counts.get(s, 0):,} {s}" for s in STATUSES)
        lines.append(f"  {account}: {parts}")
    held = status["held"]
    lines.append(
        f"  pins held on the node: {held.get('ours', 0):,} pinned by serve, "
        f"{held.get('found', 0):,} pinned before anyone asked, "
        f"{held.get('unpin', 0):,} waiting to be removed"
    )
    return lines
