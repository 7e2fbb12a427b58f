"""The state of `pinsyncd serve`: every pin request of every account, and the pins this
service holds in Kubo, in one SQLite file (WAL) of its own.

What keeps "never lose" across a crash or restart:
- a request is committed before its answer is sent, so an accepted request is never lost;
  a request found `pinning` at start-up is simply pinned again (`pin/add` is idempotent);
- a CID is pinned in Kubo once, whoever asks, and stays pinned while any request names it
  (`requests.key`, the CID as v1). The row of `held` says whether this service pinned it
  (`ours`: it may unpin it) or found it pinned already (`found`: someone else's, never
  unpinned); it is written before `pin/add` is sent;
- removing the last request of a CID marks its pin `unpin` in the same transaction; the
  `pin/rm` happens after, and a restart finds the mark. A replace keeps the old CID pinned
  until the new request is done (`after`), so blocks the two share are never collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiosqlite

from pinsyncd.serve.wire import Pin, Query
from pinsyncd.sqlite_tx import transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    requestid TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    cid TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT,
    origins TEXT NOT NULL DEFAULT '[]',
    meta TEXT,
    created INTEGER NOT NULL,
    status TEXT NOT NULL,
    details TEXT,
    updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_account ON requests (account, created);
CREATE INDEX IF NOT EXISTS requests_by_key ON requests (key, status);
CREATE INDEX IF NOT EXISTS requests_by_status ON requests (status, created);
CREATE TABLE IF NOT EXISTS held (
    key TEXT PRIMARY KEY,
    cid TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ours', 'found', 'unpin')),
    after TEXT
);
CREATE INDEX IF NOT EXISTS held_by_state ON held (state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SCHEMA_VERSION = 1
PENDING = ("queued", "pinning")


@dataclass(frozen=True)
class Request:
    """One stored pin request."""

    requestid: str
    account: str
    pin: Pin
    created_ms: int
    status: str
    details: str | None


@dataclass(frozen=True)
class Unpin:
    """A CID this service pinned and no request names any more."""

    key: str
    cid: str
    after: str | None  # the request (of a replace) that must be done first


class ServeStore:
    """Open with `await ServeStore.open(path)`; one connection, writes take turns."""

    def __init__(self, db: aiosqlite.Connection, path: Path, wall_ms: Callable[[], int]) -> None:
        self._db = db
        self.path = path
        self._write = asyncio.Lock()
        self._wall_ms = wall_ms
        self._last_created = 0

    @classmethod
    async def open(cls, path: Path, *, wall_ms: Callable[[], int] | None = None) -> Self:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.create_function("fold", 1, _fold, deterministic=True)
            await db.executescript(SCHEMA)
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise StoreTooNew(path, version)
            await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            await db.close()
            raise
        store = cls(db, path, wall_ms or _now_ms)
        async with db.execute("SELECT MAX(created) FROM requests") as cursor:
            row = await cursor.fetchone()
        store._last_created = int(row[0]) if row and row[0] is not None else 0
        return store

    async def close(self) -> None:
        await self._db.close()

    # --- the five operations -----------------------------------------------------------------

    async def add(self, account: str, pin: Pin, *, max_pins: int | None = None) -> Request:
        """Store a new request, `queued`; raises QuotaReached when the account is full."""
        async with self._transaction():
            await self._check_quota(account, max_pins)
            return await self._insert(account, pin)

    async def replace(
        self, account: str, requestid: str, pin: Pin, *, max_pins: int | None = None
    ) -> Request | None:
        """The new request that takes the place of `requestid` (None: no such request)."""
        async with self._transaction():
            old = await self._get(account, requestid)
            if old is None:
                return None
            new = await self._insert(account, pin)
            await self._delete(old, after=new.requestid)
            return new

    async def delete(self, account: str, requestid: str) -> Request | None:
        """Remove a request (None: no such request of this account)."""
        async with self._transaction():
            old = await self._get(account, requestid)
            if old is not None:
                await self._delete(old, after=None)
            return old

    async def get(self, account: str, requestid: str) -> Request | None:
        return await self._get(account, requestid)

    async def find(self, account: str, query: Query) -> tuple[int, list[Request]]:
        """(how many requests match, the newest `query.limit` of them)."""
        where, params = _where(account, query)
        async with self._db.execute(f"SELECT COUNT(*) FROM requests WHERE {where}", params) as c:
            row = await c.fetchone()
        count = int(row[0]) if row else 0
        sql = f"SELECT {_COLUMNS} FROM requests WHERE {where} ORDER BY created DESC LIMIT ?"
        async with self._db.execute(sql, [*params, query.limit]) as cursor:
            rows = await cursor.fetchall()
        return count, [_request(row) for row in rows]

    # --- the pinner's side -------------------------------------------------------------------

    async def pending_keys(self) -> list[str]:
        """The CIDs (keys) that requests wait for, oldest request first."""
        sql = (
            "SELECT key FROM requests WHERE status IN ('queued', 'pinning') "
            "GROUP BY key ORDER BY MIN(created)"
        )
        async with self._db.execute(sql) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def pinned_keys(self) -> list[tuple[str, str]]:
        """(key, cid) of every CID some request holds as `pinned`."""
        async with self._db.execute(
            "SELECT key, MIN(cid) FROM requests WHERE status = 'pinned' GROUP BY key"
        ) as cursor:
            return [(row[0], row[1]) for row in await cursor.fetchall()]

    async def waiting(self, key: str) -> list[Request]:
        """The requests that wait for `key`, oldest first."""
        sql = (
            f"SELECT {_COLUMNS} FROM requests WHERE key = ? "
            "AND status IN ('queued', 'pinning') ORDER BY created"
        )
        async with self._db.execute(sql, (key,)) as cursor:
            return [_request(row) for row in await cursor.fetchall()]

    async def set_status(
        self, key: str, status: str, details: str | None, *, only: Iterable[str] = PENDING
    ) -> int:
        """Move every request of `key` whose status is in `only` to `status`; how many."""
        states = tuple(only)
        marks = ",".join("?" * len(states))
        async with self._transaction():
            cursor = await self._db.execute(
                f"UPDATE requests SET status = ?, details = ?, updated = ? "
                f"WHERE key = ? AND status IN ({marks})",
                (status, details, self._wall_ms(), key, *states),
            )
            return cursor.rowcount

    async def hold(self, key: str, cid: str, state: str) -> None:
        """Note that Kubo holds `key` as `ours` or `found` (before `pin/add` is sent)."""
        async with self._transaction():
            await self._db.execute(
                "INSERT INTO held (key, cid, state) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET state = excluded.state, after = NULL",
                (key, cid, state),
            )

    async def forget_hold(self, key: str) -> None:
        """Kubo no longer holds `key`: whose it is is asked again when it is pinned next."""
        async with self._transaction():
            await self._db.execute("DELETE FROM held WHERE key = ? AND state != 'unpin'", (key,))

    async def names(self, key: str) -> bool:
        """Whether any request (of any account, in any status) names `key`."""
        return await self._names(key)

    async def release_if_orphan(self, key: str) -> bool:
        """After the pinner's work on `key`: if no request names it any more (its last one
        was deleted while the work was under way, before the pin was noted), an `ours` pin
        is marked `unpin` and a `found` one forgotten. Whether an unpin is now due."""
        async with self._transaction():
            if await self._names(key):
                return False
            cursor = await self._db.execute(
                "UPDATE held SET state = 'unpin', after = NULL WHERE key = ? AND state = 'ours'",
                (key,),
            )
            await self._db.execute("DELETE FROM held WHERE key = ? AND state = 'found'", (key,))
            return cursor.rowcount > 0

    async def held(self, key: str) -> str | None:
        async with self._db.execute("SELECT state FROM held WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def unpins(self) -> list[Unpin]:
        async with self._db.execute(
            "SELECT key, cid, after FROM held WHERE state = 'unpin' ORDER BY key"
        ) as cursor:
            return [Unpin(row[0], row[1], row[2]) for row in await cursor.fetchall()]

    async def unpin_ready(self, unpin: Unpin) -> bool:
        """Whether `unpin` may run now: still marked, no request names its CID, and the
        request it waits for (a replace's new one) is no longer pending."""
        if await self.held(unpin.key) != "unpin" or await self._names(unpin.key):
            return False
        if unpin.after is None:
            return True
        async with self._db.execute(
            "SELECT 1 FROM requests WHERE requestid = ? AND status IN ('queued', 'pinning')",
            (unpin.after,),
        ) as cursor:
            return await cursor.fetchone() is None

    async def unpinned(self, key: str) -> None:
        """`pin/rm` is done: forget the pin, unless a request came for it meanwhile."""
        async with self._transaction():
            if not await self._names(key):
                await self._db.execute("DELETE FROM held WHERE key = ? AND state = 'unpin'", (key,))

    async def counts(self) -> dict[tuple[str, str], int]:
        """Requests by (account, status)."""
        async with self._db.execute(
            "SELECT account, status, COUNT(*) FROM requests GROUP BY account, status"
        ) as cursor:
            return {(row[0], row[1]): int(row[2]) for row in await cursor.fetchall()}

    async def held_counts(self) -> dict[str, int]:
        async with self._db.execute("SELECT state, COUNT(*) FROM held GROUP BY state") as cursor:
            return {row[0]: int(row[1]) for row in await cursor.fetchall()}

    async def get_meta(self, key: str) -> str | None:
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        async with self._transaction():
            await self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- plumbing ----------------------------------------------------------------------------

    def _transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        return transaction(self._db, self._write)

    async def _check_quota(self, account: str, max_pins: int | None) -> None:
        if max_pins is None:
            return
        async with self._db.execute(
            "SELECT COUNT(*) FROM requests WHERE account = ?", (account,)
        ) as cursor:
            row = await cursor.fetchone()
        if row and int(row[0]) >= max_pins:
            raise QuotaReached(max_pins)

    def _next_created(self) -> int:
        """Now in milliseconds, and later than every request before: `created` is unique,
        so paging with a strict `before` never skips nor repeats one (clients that keep
        times in milliseconds, as JavaScript does, included)."""
        self._last_created = max(self._wall_ms(), self._last_created + 1)
        return self._last_created

    async def _insert(self, account: str, pin: Pin) -> Request:
        request = Request(
            requestid=str(uuid.uuid4()),
            account=account,
            pin=pin,
            created_ms=self._next_created(),
            status="queued",
            details=None,
        )
        await self._db.execute(
            f"INSERT INTO requests ({_COLUMNS}, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                request.requestid,
                account,
                pin.cid,
                pin.key,
                pin.name,
                json.dumps(list(pin.origins)),
                None if pin.meta is None else json.dumps(dict(pin.meta)),
                request.created_ms,
                request.status,
                None,
                request.created_ms,
            ),
        )
        # A pin waiting to be removed is wanted again: keep it.
        await self._db.execute(
            "UPDATE held SET state = 'ours', after = NULL WHERE key = ? AND state = 'unpin'",
            (pin.key,),
        )
        return request

    async def _delete(self, old: Request, *, after: str | None) -> None:
        await self._db.execute("DELETE FROM requests WHERE requestid = ?", (old.requestid,))
        if not await self._names(old.pin.key):
            await self._db.execute(
                "UPDATE held SET state = 'unpin', after = ? WHERE key = ? AND state = 'ours'",
                (after, old.pin.key),
            )
            # someone else's pin: nothing to undo, and the next request looks again
            await self._db.execute(
                "DELETE FROM held WHERE key = ? AND state = 'found'", (old.pin.key,)
            )

    async def _names(self, key: str) -> bool:
        async with self._db.execute("SELECT 1 FROM requests WHERE key = ? LIMIT 1", (key,)) as c:
            return await c.fetchone() is not None

    async def _get(self, account: str, requestid: str) -> Request | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM requests WHERE requestid = ? AND account = ?",
            (requestid, account),
        ) as cursor:
            row = await cursor.fetchone()
        return _request(row) if row else None


class QuotaReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"this account may keep at most {limit} pin requests")
        self.limit = limit


class StoreTooNew(Exception):
    def __init__(self, path: Path, version: int) -> None:
        super().__init__(
            f"{path} was written by a newer pinsyncd (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade pinsyncd"
        )


_COLUMNS = "requestid, account, cid, key, name, origins, meta, created, status, details"


def _request(row: Any) -> Request:
    meta = json.loads(row[6]) if row[6] is not None else None
    return Request(
        requestid=row[0],
        account=row[1],
        pin=Pin(cid=row[2], key=row[3], name=row[4], origins=tuple(json.loads(row[5])), meta=meta),
        created_ms=int(row[7]),
        status=row[8],
        details=row[9],
    )


def _where(account: str, query: Query) -> tuple[str, list[Any]]:
    clauses = ["account = ?"]
    params: list[Any] = [account]
    clauses.append(f"status IN ({','.join('?' * len(query.statuses))})")
    params += query.statuses
    if query.keys:
        clauses.append(f"key IN ({','.join('?' * len(query.keys))})")
        params += query.keys
    if query.name is not None:
        if query.match == "exact":
            clauses.append("name = ?")
        elif query.match == "iexact":
            clauses.append("fold(name) = fold(?)")
        elif query.match == "partial":
            clauses.append("instr(name, ?) > 0")
        else:
            clauses.append("instr(fold(name), fold(?)) > 0")
        params.append(query.name)
    if query.before_us is not None:  # created is in ms: strictly before, to the microsecond
        clauses.append("created * 1000 < ?")
        params.append(query.before_us)
    if query.after_us is not None:
        clauses.append("created * 1000 > ?")
        params.append(query.after_us)
    for meta_key, value in query.meta.items():
        clauses.append(
            "EXISTS (SELECT 1 FROM json_each(requests.meta) WHERE json_each.key = ? "
            "AND json_each.value = ? AND json_each.type = 'text')"
        )
        params += [meta_key, value]
    return " AND ".join(clauses), params


def _fold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
