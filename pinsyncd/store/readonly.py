"""The read side of the state file: what `pinsyncd status`, `/status` and `/metrics` show,
read in one place (safely beside a running daemon: WAL readers never block the writer, and
the schema is migrated in one transaction, so a reader never meets half of one).

Per service, how many of the node's pins are pinned, queued, pinning, failed or not yet
sent, with the facts the daemon noted for it; and every failed pin, for `status --failed`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pinsyncd.model import DEFAULT_MAX_ATTEMPTS, ServiceState
from pinsyncd.store.drill_record import read_drill
from pinsyncd.store.errors import StateError, sqlite_problem
from pinsyncd.store.schema import (
    COUNTS_SQL,
    FAILED_FOR_GOOD_SQL,
    SCHEMA_VERSION,
    SERVICE_COLUMNS,
    UNSENT_SQL,
    last_success_key,
    service_from_row,
)

STATUSES = ("pinned", "pinning", "queued", "failed")
KUBO_MFS_NOTE = "kubo_mfs_policy"
"""The meta key of what a cycle found against Kubo's own settings (`kubo_setup.overlap`)."""


def read_status(
    state_path: Path,
    services: Sequence[str],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    replicas: int | None = None,
    stuck_after: float = 3600.0,
) -> dict[str, Any]:
    """The `status --json` document. A state file that does not exist yet reads as empty.
    `replicas` is `sync.replicas` (None: every service)."""
    replicas = min(replicas or len(services), len(services))
    result: dict[str, Any] = {
        "services": {},
        "local": {"pins": 0, "selected": 0, "last_cycle": None},
        "replication": {"replicas": replicas, "services": len(services), "kinds": {}},
        "stuck_after": stuck_after,
        "drill": read_drill(state_path, services),
    }
    db = _connect(state_path)
    try:
        for name in services:
            result["services"][name] = (
                _service(db, name, max_attempts, stuck_after, everywhere=replicas >= len(services))
                if db
                else _empty()
            )
        if db:
            pins, selected = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(selected), 0) FROM local_pins"
            ).fetchone()
            row = db.execute("SELECT value FROM meta WHERE key='last_cycle'").fetchone()
            result["local"] = {
                "pins": pins,
                "selected": selected,
                "last_cycle": _iso(float(row[0])) if row else None,
                "skipped": _skipped(db),
            }
            result["replication"]["kinds"] = _replication(db, services, replicas)
            warnings = _meta_json(db, KUBO_MFS_NOTE).get("warnings")
            result["warnings"] = [w for w in warnings or [] if isinstance(w, str)]
    except sqlite3.DatabaseError as exc:
        raise _read_error(state_path, exc) from None
    finally:
        if db:
            db.close()
    return result


def _meta_json(db: sqlite3.Connection, key: str) -> dict[str, Any]:
    """A fact the daemon noted (`StateStore.note`); {} when there is none, or it is not one."""
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    try:
        fact = json.loads(row[0]) if row else {}
    except ValueError:
        return {}
    return fact if isinstance(fact, dict) else {}


def _skipped_records(db: sqlite3.Connection, service: str) -> tuple[int, str | None]:
    """(records skipped in the service's last full listing, why the first one was)."""
    fact = _meta_json(db, f"skipped_records:{service}")
    records, reason = fact.get("records"), fact.get("reason")
    return (
        records if type(records) is int else 0,
        reason if isinstance(reason, str) else None,
    )


def _dials(db: sqlite3.Connection, service: str) -> dict[str, Any] | None:
    """The service's delegates the node failed to dial at their latest try, with the error
    and how many origins went with its pins; None when every dial worked (or none was made)."""
    fact = _meta_json(db, f"delegates:{service}")
    delegates, error, origins = fact.get("delegates"), fact.get("error"), fact.get("origins_sent")
    if not isinstance(delegates, list) or not delegates:
        return None
    cause = fact.get("cause")
    return {
        "delegates": [str(d) for d in delegates],
        "error": str(error),
        "cause": cause if isinstance(cause, str) else str(error),
        "origins_sent": origins if type(origins) is int else 0,
    }


def _skipped(db: sqlite3.Connection) -> dict[str, int]:
    """What the node's last listing left out: lines that are not a pin, CIDs that do not
    parse, second spellings of one CID."""
    counts = _meta_json(db, "node_skipped")
    return {
        k: v for k in ("lines", "unparsable", "spellings") if type(v := counts.get(k, 0)) is int
    }


def _replication(
    db: sqlite3.Connection, services: Sequence[str], replicas: int
) -> dict[str, dict[str, int]]:
    """Per kind of pin (recursive, direct, mfs): selected CIDs, how many are pinned on fewer
    than `replicas` of the configured services, and how many are pinned on none."""
    if not services:
        return {}
    marks = ",".join("?" * len(services))
    rows = db.execute(
        "SELECT kind, COUNT(*), COALESCE(SUM(copies < ?), 0), COALESCE(SUM(copies = 0), 0) "
        "FROM (SELECT l.kind AS kind, (SELECT COUNT(*) FROM remote_pins AS r "
        f"WHERE r.cid = l.cid AND r.status = 'pinned' AND r.service IN ({marks})) AS copies "
        "FROM local_pins AS l WHERE l.selected) GROUP BY kind ORDER BY kind DESC",
        (replicas, *services),
    )
    return {kind: {"cids": n, "below": below, "none": none} for kind, n, below, none in rows}


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    db = sqlite3.connect(path, timeout=10)
    try:
        db.execute("PRAGMA query_only=1")
        (version,) = db.execute("PRAGMA user_version").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _read_error(path, exc) from None
    if version == 0:  # created, and not set up yet: nothing to read
        db.close()
        return None
    if version != SCHEMA_VERSION:
        db.close()
        newer = (
            "newer than this pinsyncd reads; upgrade pinsyncd"
            if version > SCHEMA_VERSION
            else "from an older pinsyncd; `pinsyncd run` or `pinsyncd sync` brings it up to date"
        )
        raise StateError(f"the state file {path} has schema version {version}, {newer}")
    return db


def _read_error(path: Path, exc: sqlite3.DatabaseError) -> StateError:
    return StateError(sqlite_problem(path, exc, writing=False))


def _empty() -> dict[str, Any]:
    return {
        **dict.fromkeys(STATUSES, 0),
        "unsent": 0,
        "sending": 0,
        "failed_for_good": 0,
        "stuck": 0,
        "last_cycle": None,
        "last_error": None,
        "paused": None,
        "paused_until": None,
        "down_since": None,
        "skipped_records": 0,
        "skipped_reason": None,
        "replace_noop": False,
        "delegates_unreachable": None,
    }


def _service(
    db: sqlite3.Connection, name: str, max_attempts: int, stuck_after: float, *, everywhere: bool
) -> dict[str, Any]:
    out = _empty()
    out["stuck"] = _stuck(db, name, stuck_after)
    (out["failed_for_good"],) = db.execute(
        f"SELECT COUNT(*) FROM remote_pins WHERE service=? AND {FAILED_FOR_GOOD_SQL}",
        (name, max_attempts),
    ).fetchone()
    for status, count in db.execute(COUNTS_SQL, (name,)):
        if status in STATUSES:
            out[status] = count
        elif status == "intent":
            out["sending"] = count
    row = db.execute(
        "SELECT last_cycle, last_error, paused_until, pause_reason, unsent, down_since "
        "FROM services WHERE name=?",
        (name,),
    ).fetchone()
    out["skipped_records"], out["skipped_reason"] = _skipped_records(db, name)
    out["replace_noop"] = bool(_meta_json(db, f"replace_noop:{name}"))
    out["delegates_unreachable"] = _dials(db, name)
    if everywhere or not row or row[4] is None:
        (out["unsent"],) = db.execute(UNSENT_SQL, (name,)).fetchone()
    else:  # with K of N, what is meant for this service is known after its last cycle
        out["unsent"] = row[4]
    if row:
        last_cycle, last_error, paused_until, pause_reason, _, down_since = row
        out["last_cycle"] = _iso(last_cycle) if last_cycle else None
        out["last_error"] = last_error
        out["down_since"] = _iso(down_since) if down_since else None
        if pause_reason and paused_until and paused_until > datetime.now(UTC).timestamp():
            out["paused"] = pause_reason
            out["paused_until"] = _iso(paused_until)
    return out


def _stuck(db: sqlite3.Connection, name: str, stuck_after: float) -> int:
    """Requests queued or pinning for longer than `stuck_after` since the service took them."""
    return sum(1 for _ in _stuck_rows(db, name, stuck_after))


_STUCK_SQL = (
    "SELECT created, cid, status, name FROM remote_pins "
    "WHERE service=? AND status IN ('queued', 'pinning')"
)


def _stuck_rows(
    db: sqlite3.Connection, name: str, stuck_after: float
) -> Iterator[tuple[float, str, str, str | None]]:
    """(since, CID, status, the request's name) of each request on `name` that is stuck:
    queued or pinning for longer than `stuck_after` since the service took it (`created`)."""
    cutoff = datetime.now(UTC).timestamp() - stuck_after
    for created, cid, status, pin_name in db.execute(_STUCK_SQL, (name,)):
        try:
            moment = datetime.fromisoformat(created)
        except (TypeError, ValueError):
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if moment.timestamp() < cutoff:
            yield moment.timestamp(), cid, status, pin_name


def read_service_states(state_path: Path, services: Sequence[str]) -> dict[str, ServiceState]:
    """Each service's bookkeeping as its last cycle saved it (for `/metrics`: what holds it
    back, and since when; its last success); a service never synced has the defaults."""
    states = {name: ServiceState(name) for name in services}
    db = _connect(state_path)
    if db is None:
        return states
    try:
        for name in services:
            row = db.execute(
                f"SELECT {SERVICE_COLUMNS} FROM services WHERE name=?",
                (name,),
            ).fetchone()
            success = db.execute(
                "SELECT value FROM meta WHERE key=?", (last_success_key(name),)
            ).fetchone()
            states[name] = service_from_row(name, row, success[0] if success else None)
    except sqlite3.DatabaseError as exc:
        raise _read_error(state_path, exc) from None
    finally:
        db.close()
    return states


def read_failed(
    state_path: Path, services: Sequence[str], *, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> list[dict[str, Any]]:
    """For `status --failed`: every pin a service marked failed, with the service's reason,
    and every add that failed for good without reaching the service, with its error."""
    db = _connect(state_path)
    if db is None:
        return []
    try:
        rows = db.execute(
            f"SELECT {_FAILED_COLUMNS} FROM remote_pins WHERE {_FAILED_WHERE} "
            "ORDER BY service, cid",
            (max_attempts,),
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise _read_error(state_path, exc) from None
    finally:
        db.close()
    wanted = set(services)
    return [_failed(row) for row in rows if row[0] in wanted]


_FAILED_WHERE = f"(status='failed' OR (status='error' AND {FAILED_FOR_GOOD_SQL}))"
"""The pins `status --failed` lists; its parameter is `max_attempts`."""
_FAILED_COLUMNS = (
    "service, cid, name, attempts, COALESCE(details, last_error), requestid, next_attempt"
)


def _failed(row: tuple[Any, ...]) -> dict[str, Any]:
    service, cid, name, attempts, details, requestid, next_attempt = row
    return {
        "service": service,
        "cid": cid,
        "name": name,
        "attempts": attempts,
        "reason": details,
        "requestid": requestid,
        "next_try": _iso(next_attempt) if next_attempt else None,
    }


def read_trouble(
    state_path: Path,
    services: Sequence[str],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    stuck_after: float = 3600.0,
    limit: int = 50,
) -> dict[str, dict[str, Any]]:
    """For the status page: per service, the pins `status --failed` lists (by CID) and the
    stuck ones (the longest stuck first), at most `limit` of each, with how many there are:
    `{"failed": [...], "failed_total": n, "stuck": [...], "stuck_total": n}`. A failed row
    is `read_failed`'s; a stuck row has its CID, name, status and `since` (ISO 8601)."""
    db = _connect(state_path)
    if db is None:
        return {name: _no_trouble() for name in services}
    try:
        return {name: _trouble(db, name, max_attempts, stuck_after, limit) for name in services}
    except sqlite3.DatabaseError as exc:
        raise _read_error(state_path, exc) from None
    finally:
        db.close()


def _no_trouble() -> dict[str, Any]:
    return {"failed": [], "failed_total": 0, "stuck": [], "stuck_total": 0}


def _trouble(
    db: sqlite3.Connection, name: str, max_attempts: int, stuck_after: float, limit: int
) -> dict[str, Any]:
    where = f"service=? AND {_FAILED_WHERE}"
    (failed_total,) = db.execute(
        f"SELECT COUNT(*) FROM remote_pins WHERE {where}", (name, max_attempts)
    ).fetchone()
    failed = db.execute(
        f"SELECT {_FAILED_COLUMNS} FROM remote_pins WHERE {where} ORDER BY cid LIMIT ?",
        (name, max_attempts, limit),
    ).fetchall()
    stuck = sorted(_stuck_rows(db, name, stuck_after))
    return {
        "failed": [_failed(row) for row in failed],
        "failed_total": failed_total,
        "stuck": [
            {"cid": cid, "name": pin_name, "status": status, "since": _iso(since)}
            for since, cid, status, pin_name in stuck[:limit]
        ],
        "stuck_total": len(stuck),
    }


def read_previous_peer_ids(state_path: Path) -> frozenset[str]:
    """The peer ids this node took over (`StateStore.previous_peer_ids`), read beside a
    running writer; none when there is no state file yet."""
    if not state_path.exists():
        return frozenset()
    try:
        db = sqlite3.connect(f"file:{state_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT value FROM meta WHERE key='previous_peer_ids'").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            return frozenset()  # created, and not set up yet
        raise _read_error(state_path, exc) from None
    return frozenset(json.loads(rows[0][0])) if rows else frozenset()


def read_pinned(state_path: Path, service: str) -> list[tuple[str, str | None]]:
    """(CID, requestid) of every request the state records as `pinned` on `service`: what a
    restore drill draws its sample from."""
    db = _connect(state_path)
    if db is None:
        return []
    try:
        return [
            (cid, requestid)
            for cid, requestid in db.execute(
                "SELECT cid, requestid FROM remote_pins WHERE service=? AND status='pinned' "
                "ORDER BY cid",
                (service,),
            )
        ]
    except sqlite3.DatabaseError as exc:
        raise _read_error(state_path, exc) from None
    finally:
        db.close()


def read_node_peer_id(state_path: Path) -> str | None:
    """The peer id of the node this state backs up, as last listed; None before that."""
    db = _connect(state_path)
    if db is None:
        return None
    try:
        row = db.execute("SELECT value FROM meta WHERE key='node_peer_id'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _read_error(state_path, exc) from None
    finally:
        db.close()
    return str(row[0]) if row and row[0] else None


def _iso(timestamp: float) -> str:
    """A stored Unix time as ISO 8601; one out of any calendar's range (a server's absurd
    wait, written by an older pinsyncd) is shown as the last representable moment."""
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "9999-12-31T23:59:59+00:00" if timestamp > 0 else "1970-01-01T00:00:00+00:00"


REQUEST_STATUSES = ("queued", "pinning", "pinned", "failed", "sending", "error")
"""What `pinsyncd ls --status` takes: the spec's four, `sending` (an add whose answer has not
come) and `error` (an add that did not reach the service)."""
_STORED = {"sending": "intent"}


def read_requests(
    state_path: Path,
    services: Sequence[str],
    *,
    statuses: Sequence[str] = REQUEST_STATUSES,
    cids: Sequence[str] = (),
) -> Iterator[dict[str, Any]]:
    """For `pinsyncd ls`: the requests the state knows on `services`, by service and CID,
    with the local pin's name; only `statuses`, and only `cids` (every spelling of each)
    when given. Read a row at a time, beside a running daemon."""
    db = _connect(state_path)
    if db is None:
        return
    try:
        where = [f"r.service IN ({','.join('?' * len(services))})"]
        params: list[object] = list(services)
        stored = [_STORED.get(s, s) for s in statuses]
        where.append(f"r.status IN ({','.join('?' * len(stored))})")
        params += stored
        if cids:
            where.append(f"r.cid IN ({','.join('?' * len(cids))})")
            params += list(cids)
        rows = db.execute(
            "SELECT r.service, r.cid, r.status, r.requestid, r.created, r.name, r.attempts, "
            "r.next_attempt, COALESCE(r.details, r.last_error), r.origin, r.owned, l.name, "
            "l.kind FROM remote_pins AS r LEFT JOIN local_pins AS l ON l.cid = r.cid "
            f"WHERE {' AND '.join(where)} ORDER BY r.service, r.cid",
            params,
        )
        for row in rows:
            yield _request(row)
    except sqlite3.DatabaseError as exc:
        raise _read_error(state_path, exc) from None
    finally:
        db.close()


def read_local_pin(state_path: Path, cids: Sequence[str]) -> dict[str, Any] | None:
    """For `pinsyncd show`: the node's pin of one of `cids` (the spellings of one CID) as
    last listed: its CID, name, kind, and whether it is selected for backing up."""
    db = _connect(state_path)
    if db is None:
        return None
    try:
        row = db.execute(
            f"SELECT cid, name, kind, selected FROM local_pins WHERE cid IN "
            f"({','.join('?' * len(cids))})",
            list(cids),
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise _read_error(state_path, exc) from None
    finally:
        db.close()
    if row is None:
        return None
    cid, name, kind, selected = row
    return {"cid": cid, "name": name, "kind": kind, "selected": bool(selected)}


def _request(row: tuple[Any, ...]) -> dict[str, Any]:
    (service, cid, status, requestid, created, name, attempts, next_attempt, reason) = row[:9]
    origin, owned, local_name, kind = row[9:]
    return {
        "service": service,
        "cid": cid,
        "status": "sending" if status == "intent" else status,
        "requestid": requestid,
        "created": created,
        "name": local_name if local_name is not None else name,
        "remote_name": name,
        "local": local_name is not None,
        "kind": kind,
        "attempts": attempts,
        "next_try": _iso(next_attempt) if next_attempt and status in ("failed", "error") else None,
        "reason": reason,
        "adopted": origin == "adopted",
        "owned": bool(owned),
    }
