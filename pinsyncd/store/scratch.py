"""Temporary tables for work too big to hold in memory: a service's full listing staged for
adoption (`Staging`), and its pending requests handed out as tracking lists them (`Tracking`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pinsyncd.model import Listed, RemotePin, RemoteStatus
from pinsyncd.store.schema import R_COLUMNS, fetch, remote_from_row, scrub

if TYPE_CHECKING:
    from pinsyncd.store.db import StateStore


@dataclass(frozen=True)
class Temp:
    """A per-service temporary table, `temp."kind:service"` (names are [A-Za-z0-9_.-])."""

    kind: str
    service: str

    @property
    def name(self) -> str:
        return f'temp."{self.kind}:{self.service}"'

    def index(self, columns: str) -> str:
        """The statement that indexes it on `columns`, once it is filled."""
        return (
            f'CREATE INDEX temp."{self.kind}_index:{self.service}" '
            f'ON "{self.kind}:{self.service}" ({columns})'
        )


class Staging:
    """A service's listing in a temporary table (see `StateStore.staging`)."""

    def __init__(self, store: StateStore, service: str, table: Temp) -> None:
        self._store = store
        self._service = service
        self._temp = table
        self._indexed = False

    async def add(self, batch: Sequence[Listed]) -> None:
        async with self._store._temp_transaction():
            await self._store._db.executemany(
                f"INSERT INTO {self._temp.name} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        x.cid,
                        x.requestid,
                        x.status.value,
                        x.created,
                        x.created_ts,
                        scrub(x.name),
                        scrub(x.details),
                        int(x.owned),
                    )
                    for x in batch
                ],
            )

    async def matched(self, limit: int) -> AsyncIterator[list[tuple[Listed, RemotePin | None]]]:
        """Listed requests for CIDs the state knows (a selected local pin, or a row on the
        service), with that row, `limit` at a time in CID order (a CID listed twice comes
        out twice, side by side; the same request listed twice, once). Each chunk is read
        after the previous one was written, so it sees what that one wrote."""
        async for chunk in self._chunks(
            "(l.cid IS NOT NULL OR r.cid IS NOT NULL)", limit, with_rows=True
        ):
            yield chunk

    async def unmatched(self, limit: int) -> AsyncIterator[list[Listed]]:
        """Listed requests for CIDs the state does not know in that spelling."""
        async for chunk in self._chunks("l.cid IS NULL AND r.cid IS NULL", limit, with_rows=False):
            yield [listed for listed, _ in chunk]

    async def _chunks(
        self, where: str, limit: int, *, with_rows: bool
    ) -> AsyncIterator[list[tuple[Listed, RemotePin | None]]]:
        db = self._store._db
        if not self._indexed:
            async with self._store._temp_transaction():
                await db.execute(  # covering: the chunks are read from it alone, in order
                    self._temp.index(
                        "cid, requestid, status, created, created_ts, name, details, owned"
                    )
                )
            self._indexed = True
        sql = (
            "SELECT a.cid, a.requestid, a.status, a.created, a.created_ts, a.name, a.details, "
            f"a.owned, {R_COLUMNS} FROM {self._temp.name} AS a "
            "LEFT JOIN local_pins AS l ON l.cid = a.cid AND l.selected "
            "LEFT JOIN remote_pins AS r ON r.service = ? AND r.cid = a.cid "
            f"WHERE (a.cid, a.requestid) > (?, ?) AND {where} "
            "ORDER BY a.cid, a.requestid LIMIT ?"
        )
        after = ("", "")
        while True:
            rows = await fetch(db, sql, (self._service, *after, limit))
            if not rows:
                return
            chunk: list[tuple[Listed, RemotePin | None]] = []
            for row in rows:
                listed = Listed(
                    row[0],
                    row[1],
                    RemoteStatus(row[2]),
                    row[3],
                    row[4],
                    row[5],
                    row[6],
                    bool(row[7]),
                )
                remote = remote_from_row(row[8:]) if with_rows and row[8] is not None else None
                chunk.append((listed, remote))
            after = (rows[-1][0], rows[-1][1])
            yield chunk


class Tracking:
    """Pending requests still to be accounted for in a status round (`StateStore.tracking`)."""

    def __init__(self, store: StateStore, service: str, table: str, count: int) -> None:
        self._store = store
        self._service = service
        self._table = table
        self._left = count

    def remaining(self) -> int:
        """How many are still to be accounted for (kept here: a COUNT would scan)."""
        return self._left

    async def oldest_created(self) -> str | None:
        value = (await self._store._one(f"SELECT MIN(created) FROM {self._table}"))[0]
        return str(value) if value is not None else None

    async def take(self, requestids: Sequence[str]) -> dict[str, RemotePin]:
        """The rows of those of `requestids` still to be accounted for, which then are."""
        db = self._store._db
        out: dict[str, RemotePin] = {}
        for start in range(0, len(requestids), 500):
            chunk = requestids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await fetch(
                db,
                # CROSS JOIN: from the few listed ids to the rows, not the other way round.
                f"SELECT {R_COLUMNS} FROM {self._table} AS t CROSS JOIN remote_pins AS r "
                f"ON r.service = ? AND r.cid = t.cid AND r.requestid = t.requestid "
                f"WHERE t.requestid IN ({marks})",
                (self._service, *chunk),
            )
            if not rows:
                continue
            for row in rows:
                out[row[3]] = remote_from_row(row)
            async with self._store._temp_transaction():
                done = await db.execute(
                    f"DELETE FROM {self._table} WHERE requestid IN ({marks})", tuple(chunk)
                )
                self._left -= done.rowcount
        return out

    async def rest(self, limit: int) -> list[RemotePin]:
        """Up to `limit` of the rows not yet accounted for."""
        rows = await fetch(
            self._store._db,
            f"SELECT {R_COLUMNS} FROM {self._table} AS t CROSS JOIN remote_pins AS r "
            f"ON r.service = ? AND r.cid = t.cid AND r.requestid = t.requestid LIMIT ?",
            (self._service, limit),
        )
        return [remote_from_row(row) for row in rows]
