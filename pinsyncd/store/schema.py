"""The state file's tables, the migrations that bring an older file up to date (SQLite's
`user_version` is the schema version), the SQL the read side shares, and how a row of
`remote_pins` maps to a `RemotePin`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import aiosqlite

from pinsyncd import clock
from pinsyncd.logs import redact_text
from pinsyncd.model import GIVEN_UP_STATUSES, Origin, RemotePin, RemoteStatus, ServiceState

_V1 = """
CREATE TABLE local_pins (
    cid  TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE TABLE remote_pins (
    service      TEXT NOT NULL,
    cid          TEXT NOT NULL,
    status       TEXT NOT NULL,
    requestid    TEXT,
    created      TEXT,
    name         TEXT,
    origin       TEXT NOT NULL DEFAULT 'created',
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    last_error   TEXT,
    details      TEXT,
    updated      REAL NOT NULL,
    PRIMARY KEY (service, cid)
) WITHOUT ROWID;
CREATE INDEX remote_pins_by_status ON remote_pins (service, status);

CREATE TABLE services (
    name         TEXT PRIMARY KEY,
    adopted      INTEGER NOT NULL DEFAULT 0,
    paused_until REAL NOT NULL DEFAULT 0,
    pause_reason TEXT,
    last_cycle   REAL,
    last_error   TEXT
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


_V2 = """
ALTER TABLE services ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN rate REAL;
"""


_V3 = """
ALTER TABLE services ADD COLUMN last_verified REAL NOT NULL DEFAULT 0;
"""


_V4 = """
ALTER TABLE local_pins ADD COLUMN kind TEXT NOT NULL DEFAULT 'recursive';
ALTER TABLE local_pins ADD COLUMN selected INTEGER NOT NULL DEFAULT 1;
CREATE TABLE local_gone (
    cid   TEXT PRIMARY KEY,
    since REAL NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO local_gone
    SELECT DISTINCT cid, CAST(strftime('%s', 'now') AS REAL) FROM remote_pins
    WHERE cid NOT IN (SELECT cid FROM local_pins);
CREATE INDEX remote_pins_by_cid ON remote_pins (cid);
ALTER TABLE services ADD COLUMN down_since REAL NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN unsent INTEGER;
"""
"""v4: pin kinds and include/exclude selection, when a CID left the node (for `unpin:
mirror`), and since when a service is down (for failover)."""


_V5 = """
ALTER TABLE remote_pins ADD COLUMN owned INTEGER NOT NULL DEFAULT 1;
UPDATE remote_pins SET owned = 0 WHERE origin = 'adopted';
"""
"""v5: whose a request is. Requests adopted before v5 may be another device's (adoption did
not look at `meta.node`), so they are kept and followed, but never deleted or replaced."""


_V6 = """
ALTER TABLE remote_pins ADD COLUMN stamp TEXT;
"""
"""v6: when a row was written on the boot clock (`pinsyncd.clock`), so that the age of an
intent does not move with the wall clock."""


_V7 = """
CREATE TABLE restore_items (
    cid     TEXT PRIMARY KEY,
    name    TEXT NOT NULL DEFAULT '',
    service TEXT,
    outcome TEXT NOT NULL,
    reason  TEXT,
    blocks  INTEGER NOT NULL DEFAULT 0,
    bytes   INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
) WITHOUT ROWID;
"""
"""v7: what `pinsyncd restore` brought back to the node, and why the rest did not come."""


MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)
"""MIGRATIONS[i] brings a file at version i to version i + 1."""


SCHEMA_VERSION = len(MIGRATIONS)


COUNTS_SQL = "SELECT status, COUNT(*) FROM remote_pins WHERE service=? GROUP BY status"


FAILED_FOR_GOOD_SQL = (
    f"status IN ({', '.join(repr(s.value) for s in sorted(GIVEN_UP_STATUSES))}) AND attempts >= ?"
)
"""`model.failed_for_good` as a filter on `remote_pins`; its parameter is `max_attempts`."""


UNSENT_SQL = """
SELECT COUNT(*) FROM local_pins AS l WHERE l.selected AND NOT EXISTS (
    SELECT 1 FROM remote_pins AS r
    WHERE r.service = ? AND r.cid = l.cid AND r.status != 'error')
"""
"""Selected local pins with no request on the service yet (never sent, or the add did not
get there). With `sync.replicas` below the number of services, not all of them are meant
for every service."""


SERVICE_COLUMNS = (
    "adopted, paused_until, pause_reason, last_cycle, last_error, failures, rate, "
    "last_verified, down_since, unsent"
)
"""The `services` columns of a `ServiceState`, after its name and in its order."""


def service_from_row(name: str, row: Any | None, last_success: str | None) -> ServiceState:
    """A `ServiceState` from its `SERVICE_COLUMNS` (None: no row yet) and its last success."""
    success = last_success_of(last_success)
    if row is None:
        return ServiceState(name, last_success=success)
    adopted, *rest = row
    return replace(ServiceState(name, bool(adopted), *rest), last_success=success)


def last_success_key(service: str) -> str:
    """The `meta` key of the end of the service's last cycle that went through (Unix time).
    A fact beside the `services` row rather than a column of it, so that it needed no new
    schema version: an older pinsyncd still opens a file that has it."""
    return f"last_success:{service}"


def last_success_of(value: str | None) -> float | None:
    """The stored value of `last_success_key`; None when there is none (or it is not one)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


REMOTE_COLUMNS = (
    "service, cid, status, requestid, created, name, origin, attempts, next_attempt, "
    "last_error, details, updated, owned, stamp"
)


R_COLUMNS = ", ".join(f"r.{c}" for c in REMOTE_COLUMNS.split(", "))  # the same, of `r`


async def fetch(
    db: aiosqlite.Connection, sql: str, params: Sequence[object] = ()
) -> list[aiosqlite.Row]:
    """Every row of one statement, as a list (aiosqlite types it as a bare iterable)."""
    return list(await db.execute_fetchall(sql, params))


def statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def scrub(text: str | None) -> str | None:
    """Text a server sent (names, errors, status details) without any configured token: a
    server may echo the Authorization header anywhere, and nothing stored may hold it."""
    return redact_text(text) if text else text


def row_from_remote(r: RemotePin) -> tuple[object, ...]:
    return (
        r.service,
        r.cid,
        r.status.value,
        r.requestid,
        r.created,
        scrub(r.name),
        r.origin.value,
        r.attempts,
        r.next_attempt,
        scrub(r.last_error),
        scrub(r.details),
        r.updated or clock.now(),
        int(r.owned),
        r.stamp,  # set by `evolve`; a row without one counts as from before this boot
    )


def remote_from_row(row: Any) -> RemotePin:
    return RemotePin(
        service=row[0],
        cid=row[1],
        status=RemoteStatus(row[2]),
        requestid=row[3],
        created=row[4],
        name=row[5],
        origin=Origin(row[6]),
        attempts=row[7],
        next_attempt=row[8],
        last_error=row[9],
        details=row[10],
        updated=row[11],
        owned=bool(row[12]),
        stamp=row[13],
    )
