"""The state store: the one writer's connection to the SQLite file, its local pinset, its
remote requests and per-service bookkeeping, fetched and saved. The rules that decide what
to do with them are in the core (`planner`, `policy`, `outcomes`); this module only keeps
what they decided.

The rule that makes "never pin twice" hold across crashes: a row in status `intent` is written
and committed *before* the `POST /pins` that creates a pin. A restart that finds an `intent`
looks the CID up on the service instead of adding it again.

WAL mode, so `pinsyncd status` can read while the daemon writes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, Self

import aiosqlite
import structlog

from pinsyncd import clock
from pinsyncd.cids import InvalidCIDError, other_spellings
from pinsyncd.logs import redact_text
from pinsyncd.model import UNFINISHED_STATUSES, RemotePin, ServiceState
from pinsyncd.spec_limits import clip_name
from pinsyncd.sqlite_tx import transaction
from pinsyncd.store.errors import StateDamaged, StateError, damaged, is_damage, set_aside_damaged
from pinsyncd.store.listing import (
    LISTING_DIGEST,
    VET_CHUNK,
    ListingDigest,
    ListingVetting,
    StoredListing,
)
from pinsyncd.store.restores import RestoreLog
from pinsyncd.store.schema import (
    COUNTS_SQL,
    FAILED_FOR_GOOD_SQL,
    MIGRATIONS,
    R_COLUMNS,
    REMOTE_COLUMNS,
    SCHEMA_VERSION,
    SERVICE_COLUMNS,
    UNSENT_SQL,
    fetch,
    last_success_key,
    remote_from_row,
    row_from_remote,
    scrub,
    service_from_row,
    statements,
)
from pinsyncd.store.scratch import Staging, Temp, Tracking

log = structlog.get_logger("pinsyncd.state")

PREVIOUS_PEER_IDS = "previous_peer_ids"
"""The meta key of the peer ids this node took over (a JSON list)."""


class StateStore:
    """The SQLite state file. Open with `await StateStore.open(path)`; `close()` is idempotent."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection serves every coroutine: transactions take turns.
        self._write_lock = asyncio.Lock()
        self._noted: dict[str, str] = {}  # what `note` last kept, by key
        # The temporary table of a listing belongs to the connection: one listing at a time.
        self._listing_lock = asyncio.Lock()
        self._local_changes = 0  # see `rowless_mark`
        self._removals: dict[str, int] = {}

    @classmethod
    async def open(cls, path: Path, *, recover: bool = False) -> Self:
        """Open (creating or migrating) the state file. A damaged file raises `StateDamaged`;
        with `recover` (only for a holder of the state lock) it is set aside instead and a
        fresh file is started: every service is then listed again on first contact, and what
        is there is adopted, so nothing is pinned twice."""
        try:
            return await cls._open(path)
        except StateDamaged as exc:
            if not recover:
                raise
            await asyncio.to_thread(set_aside_damaged, path, exc)
            return await cls._open(path)

    @classmethod
    async def _open(cls, path: Path) -> Self:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, aiosqlite.Error) as exc:
            raise StateError(f"cannot open the state file {path}: {exc}") from None
        store = cls(db, path)
        try:
            # SQL compares a stored request's name with the local name as it is sent (clipped)
            await db.create_function("clip_name", 1, clip_name, deterministic=True)
            await store._prepare()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None  # type: ignore[assignment]
            await db.close()

    async def _prepare(self) -> None:
        db = self._db
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes
            await db.execute("PRAGMA busy_timeout=10000")
            version = (await (await db.execute("PRAGMA user_version")).fetchone() or (0,))[0]
            # Pages that do not parse (a disk's or a copy's damage) are found now, not in
            # the middle of a cycle. Linear in the file's size: measured in benchmarks/.
            check = await (await db.execute("PRAGMA quick_check(1)")).fetchone()
        except aiosqlite.Error as exc:
            if is_damage(exc):
                raise damaged(self.path, exc) from None
            raise StateError(f"the state file {self.path} is not usable: {exc}") from None
        if check is not None and check[0] != "ok":
            raise damaged(self.path, check[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"the state file {self.path} has schema version {version}, newer than this "
                f"pinsyncd understands ({SCHEMA_VERSION}); upgrade pinsyncd"
            )
        if version < SCHEMA_VERSION:
            await self._migrate(version)

    async def _migrate(self, version: int) -> None:
        """Bring the file from `version` to `SCHEMA_VERSION` in one transaction: a reader
        beside it (`pinsyncd status`) sees the old schema or the new one, never one between,
        and a crash leaves the old one."""
        db, target = self._db, version
        try:
            await db.execute("BEGIN IMMEDIATE")
            for target in range(version, SCHEMA_VERSION):
                # One statement at a time: executescript() would commit halfway.
                for statement in statements(MIGRATIONS[target]):
                    await db.execute(statement)
            # The stored listing may now mean something else: the next one is diffed in full.
            await db.execute("DELETE FROM meta WHERE key = ?", (LISTING_DIGEST,))
            await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            await db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(aiosqlite.Error):
                await asyncio.shield(db.execute("ROLLBACK"))
            if isinstance(exc, aiosqlite.Error):
                raise StateError(
                    f"cannot bring the state file {self.path} to schema version "
                    f"{target + 1}: {exc} (is it another program's database?)"
                ) from None
            raise

    # --- the local pinset -------------------------------------------------------------------

    async def local_pins(self) -> dict[str, str]:
        """The last complete listing, CID -> name (selected or not)."""
        rows = await fetch(self._db, "SELECT cid, name FROM local_pins")
        return {cid: name for cid, name in rows}

    async def replace_local_pins(
        self,
        pins: Mapping[str, str],
        *,
        kinds: Mapping[str, str] | None = None,
        excluded: Collection[str] = (),
    ) -> tuple[int, int, int]:
        """`replace_local_listing` for a listing already in memory (tests, small tools)."""
        kinds = kinds or {}
        rows = [
            (cid, name, kinds.get(cid, "recursive"), int(cid not in excluded))
            for cid, name in pins.items()
        ]

        async def one_batch() -> AsyncIterator[Sequence[tuple[str, str, str, int]]]:
            yield rows

        return await self.replace_local_listing(one_batch())

    async def replace_local_listing(
        self,
        batches: AsyncIterable[Sequence[tuple[str, str, str, int]]],
        vetting: ListingVetting | None = None,
        *,
        listed_twice: bool = False,
        digest: ListingDigest | None = None,
    ) -> tuple[int, int, int]:
        async with self._listing_lock:
            self._local_changes += 1  # before and after: a reader between sees a change
            try:
                return await self._replace_local_listing(batches, vetting, listed_twice, digest)
            finally:
                self._local_changes += 1

    async def _replace_local_listing(
        self,
        batches: AsyncIterable[Sequence[tuple[str, str, str, int]]],
        vetting: ListingVetting | None,
        listed_twice: bool,
        digest: ListingDigest | None,
    ) -> tuple[int, int, int]:
        """Store a complete listing, streamed in batches of (cid, name, kind, selected), and
        return (added, removed, renamed). The batches go to a temporary table and the
        difference is made in SQL, so memory does not grow with the pinset, and an unchanged
        pinset writes nothing to the state. If the stream fails, nothing changes. With
        `listed_twice` (more than one listing, which may name one CID in each), a CID listed
        twice keeps its first entry; the MFS root always gives way to a pin. A CID that
        leaves the node is noted with the time, for `unpin: mirror`; one that comes back is
        no longer noted.
        With `vetting`, the CIDs new to the state are checked first (see `ListingVetting`);
        a listing it finds incomplete removes nothing.
        `digest` (of the listing, see `sync.snapshot`) is stored with it, in the same
        transaction, for `listing_digest`; without one, none is kept."""
        # Appended in arrival order and indexed once at the end: inserting a million random
        # CIDs into a keyed table costs several times more than sorting them once.
        async with self._write_lock:
            await self._db.execute("DROP TABLE IF EXISTS temp.listing")
            await self._db.execute(
                "CREATE TEMP TABLE listing (cid TEXT NOT NULL, name TEXT NOT NULL, "
                "kind TEXT NOT NULL, selected INTEGER NOT NULL)"
            )
        async for batch in batches:
            async with self._temp_transaction():
                await self._db.executemany("INSERT INTO temp.listing VALUES (?, ?, ?, ?)", batch)
        async with self._temp_transaction():
            # A covering index: every lookup below is answered from it, in CID order.
            await self._db.execute(
                "CREATE INDEX temp.listing_by_cid ON listing (cid, name, kind, selected)"
            )
            await self._db.execute(  # only the MFS root can be listed twice: the pin counts
                "DELETE FROM temp.listing WHERE kind = 'mfs' AND EXISTS (SELECT 1 FROM "
                "temp.listing AS t WHERE t.cid = listing.cid AND t.rowid != listing.rowid)"
            )
            if listed_twice:  # a pass over the whole listing, paid only by who needs it
                await self._db.execute(
                    "DELETE FROM temp.listing WHERE rowid NOT IN "
                    "(SELECT MIN(rowid) FROM temp.listing GROUP BY cid)"
                )
        if vetting is not None:
            await self._vet_listing(vetting)
        complete = vetting is None or vetting.complete
        now = clock.now()
        # Each statement walks one side in CID order and looks up the other by CID, so the
        # cost grows linearly: a million pins take a few seconds, not minutes.
        new = (
            "FROM temp.listing AS t INDEXED BY listing_by_cid WHERE t.cid > '' "
            "AND NOT EXISTS (SELECT 1 FROM local_pins AS l WHERE l.cid = t.cid)"
        )
        try:
            async with self._transaction():
                (renamed,) = await self._one(
                    "SELECT COUNT(*) FROM local_pins AS l CROSS JOIN temp.listing AS t "
                    "ON t.cid = l.cid WHERE l.name != t.name"
                )
                await self._db.execute(f"DELETE FROM local_gone WHERE cid IN (SELECT t.cid {new})")
                added = await self._db.execute(
                    f"INSERT OR IGNORE INTO local_pins (cid, name, kind, selected) "
                    f"SELECT t.cid, t.name, t.kind, t.selected {new} ORDER BY t.cid"
                )
                await self._db.execute(
                    "UPDATE local_pins SET (name, kind, selected) = (SELECT t.name, t.kind, "
                    "t.selected FROM temp.listing AS t WHERE t.cid = local_pins.cid) "
                    "WHERE EXISTS (SELECT 1 FROM temp.listing AS t WHERE t.cid = local_pins.cid "
                    "AND (t.name != local_pins.name OR t.kind != local_pins.kind "
                    "OR t.selected != local_pins.selected))"
                )
                gone = "NOT EXISTS (SELECT 1 FROM temp.listing AS t WHERE t.cid = local_pins.cid)"
                removed = 0
                if complete:  # else a pin may be behind a skipped line: nothing is gone
                    await self._db.execute(
                        "INSERT OR IGNORE INTO local_gone "
                        f"SELECT cid, ? FROM local_pins WHERE {gone}",
                        (now,),
                    )
                    cursor = await self._db.execute(f"DELETE FROM local_pins WHERE {gone}")
                    removed = cursor.rowcount
                if vetting is not None and vetting.unparsable_known:
                    marks = ",".join("?" * len(vetting.unparsable_known))
                    await self._db.execute(
                        f"DELETE FROM local_pins WHERE cid IN ({marks})", vetting.unparsable_known
                    )
                if vetting is not None:
                    await self._db.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('listing_vetted', '1')"
                    )
                await self._keep_listing_digest(digest)
        finally:
            async with self._write_lock:
                await self._db.execute("DROP TABLE IF EXISTS temp.listing")
        return added.rowcount, removed, renamed

    async def listing_digest(self) -> StoredListing | None:
        """What is kept of the listing the state last took in; None when the state has
        nothing that can be trusted (never listed, or its pins changed since by other
        means)."""
        return StoredListing.from_json(await self.get_meta(LISTING_DIGEST))

    async def listing_seen_again(self, stored: StoredListing, digest: ListingDigest) -> None:
        """A full listing found the same pins as `stored`: keep its digest and time."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE meta SET value = ? WHERE key = ? AND value = ?",
                (
                    StoredListing(digest, stored.pins, stored.selected).to_json(),
                    LISTING_DIGEST,
                    stored.to_json(),
                ),
            )

    async def _keep_listing_digest(self, digest: ListingDigest | None) -> None:
        """Inside the transaction that changed `local_pins`: what identifies the listing
        they now hold, or nothing (they were changed by something other than a listing)."""
        if digest is None:
            await self._db.execute("DELETE FROM meta WHERE key = ?", (LISTING_DIGEST,))
            return
        pins, selected = await self.local_counts()
        stored = StoredListing(digest, int(pins), int(selected))
        await self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", (LISTING_DIGEST, stored.to_json())
        )

    async def _vet_listing(self, vetting: ListingVetting) -> None:
        """Leave out of the listing the CIDs new to the state that do not parse, and second
        spellings of a CID already listed (CIDv0 and CIDv1 of one multihash are one pin to
        the services: the spelling the state has, else the first listed, is kept). The
        first vetting of a state file also checks the CIDs it already has."""
        everything = await self.get_meta("listing_vetted") is None
        known = "EXISTS (SELECT 1 FROM local_pins AS l WHERE l.cid = t.cid)"
        where = "" if everything else f"AND NOT {known}"
        drop: list[int] = []
        after = ""
        while True:  # a page at a time (no statement stays open across an await), in CID
            # order on both sides, as the diff itself: linear, also at a million pins
            chunk = await fetch(
                self._db,
                f"SELECT t.rowid, t.cid, {known} FROM temp.listing AS t INDEXED BY "
                f"listing_by_cid WHERE t.cid > ? AND t.kind != 'mfs' {where} "
                f"ORDER BY t.cid LIMIT {VET_CHUNK}",
                (after,),
            )
            if not chunk:
                break
            after = chunk[-1][1]
            drop.extend(await self._vet_chunk([(r[0], r[1], r[2]) for r in chunk], vetting))
        async with self._temp_transaction():
            for start in range(0, len(drop), 500):
                part = drop[start : start + 500]
                await self._db.execute(
                    f"DELETE FROM temp.listing WHERE rowid IN ({','.join('?' * len(part))})", part
                )

    async def _vet_chunk(
        self, chunk: Sequence[tuple[int, str, int]], vetting: ListingVetting
    ) -> list[int]:
        drop: list[int] = []
        twins: dict[int, list[str]] = {}
        for rowid, cid, known in chunk:
            try:
                forms = other_spellings(cid)
            except InvalidCIDError:
                drop.append(rowid)
                vetting.note_unparsable(cid, known=bool(known))
                continue
            if forms and not known:
                twins[rowid] = forms
        wanted = sorted({form for forms in twins.values() for form in forms})
        listed: dict[str, tuple[int, int]] = {}  # cid -> (rowid, in the state)
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            for cid, rowid, known in await fetch(
                self._db,
                f"SELECT t.cid, t.rowid, EXISTS (SELECT 1 FROM local_pins AS l WHERE "
                f"l.cid = t.cid) FROM temp.listing AS t WHERE t.cid IN "
                f"({','.join('?' * len(part))})",
                part,
            ):
                listed[cid] = (rowid, known)
        for rowid, forms in twins.items():
            for form in forms:
                other = listed.get(form)
                if other is not None and (other[1] or other[0] < rowid):
                    drop.append(rowid)
                    vetting.spellings += 1
                    break
        return drop

    async def local_counts(self) -> tuple[int, int]:
        """(pins, selected pins) of the last complete listing."""
        pins, selected = await self._one(
            "SELECT COUNT(*), COALESCE(SUM(selected), 0) FROM local_pins"
        )
        return pins, selected

    async def mfs_root(self) -> str | None:
        rows = await fetch(self._db, "SELECT cid FROM local_pins WHERE kind = 'mfs'")
        return next((cid for (cid,) in rows), None)

    async def reselect(self, selected: Callable[[str, str, str], bool]) -> int:
        """Apply a new include/exclude to the stored listing (the config changed while the
        node is offline); returns how many pins changed."""
        changes: list[tuple[int, str]] = []
        after = ""
        while True:  # a page at a time: no statement stays open across an await
            rows = await fetch(
                self._db,
                "SELECT cid, name, kind, selected FROM local_pins WHERE cid > ? "
                f"ORDER BY cid LIMIT {VET_CHUNK}",
                (after,),
            )
            if not rows:
                break
            after = rows[-1][0]
            for cid, name, kind, was in rows:
                now = selected(cid, name, kind)
                if now != bool(was):
                    changes.append((int(now), cid))
        self._local_changes += 1
        async with self._transaction():
            await self._db.executemany("UPDATE local_pins SET selected=? WHERE cid=?", changes)
            await self._keep_listing_digest(None)
        self._local_changes += 1
        return len(changes)

    # --- what a cycle needs of one service -------------------------------------------------

    async def plan_view(
        self,
        service: str,
        *,
        names_of: str | None = None,
        renamed: bool = False,
        cids: Collection[str] = (),
        candidates: bool = True,
        after: str = "",
        limit: int | None = None,
        include: str | None = None,
        with_rowless: bool = True,
    ) -> tuple[dict[str, str], dict[str, RemotePin], str | None, int]:
        """What the planner needs for one service, without loading what needs nothing done:

        - *candidates*: selected local pins (CID -> name) with no live request on the
          service (none yet, or an errored add, or a failed request), plus, with `renamed`,
          those whose pinned request carries another name. With `limit`, only a window of
          them: the first `limit` CIDs above `after` in CID order, and `include` (the MFS
          root) whatever its CID;
        - *rows*: the requests a plan acts on: intents, failed and errored ones (not the
          pending ones: tracking follows those), pinned ones named `names_of` (old MFS roots),
          the rename candidates' and those for `cids` (the policy's deletes);
        - where the next window starts (None: this was the last);
        - how many of the candidates have no row on the service at all.

        At rest, with everything pinned, the first two are empty, whatever the pinset's size.
        `candidates=False` leaves the candidates out. `with_rowless=False` looks only for
        candidates with a failed or errored row (from the status index, without walking the
        local pinset): for a caller that knows none is without a row (`rowless_mark`)."""
        wanted: dict[str, str] = {}
        next_after: str | None = None
        rowless = 0
        if candidates:
            # Without a row: walks the local pinset. With a failed one: from the status index.
            select = (
                "SELECT l.cid, l.name, r.status FROM local_pins AS l LEFT JOIN remote_pins AS r "
                "ON r.service = ? AND r.cid = l.cid "
                "WHERE l.selected AND (r.status IS NULL OR r.status IN ('error', 'failed'))"
                if with_rowless
                else "SELECT l.cid, l.name, r.status FROM remote_pins AS r "
                "INDEXED BY remote_pins_by_status CROSS JOIN local_pins AS l ON l.cid = r.cid "
                "WHERE r.service = ? AND r.status IN ('error', 'failed') AND l.selected"
            )
            window = f" AND l.cid > ? ORDER BY l.cid LIMIT {int(limit)}" if limit else ""
            rows = await fetch(self._db, select + window, (service, after) if limit else (service,))
            wanted = {cid: name for cid, name, _ in rows}
            rowless = sum(1 for *_, status in rows if status is None)
            if limit and len(rows) >= limit:
                next_after = rows[-1][0]
            if include and include not in wanted:
                more = await fetch(self._db, select + " AND l.cid = ?", (service, include))
                wanted.update((cid, name) for cid, name, _ in more)
        found = await fetch(
            self._db,
            f"SELECT {REMOTE_COLUMNS} FROM remote_pins INDEXED BY remote_pins_by_status "
            "WHERE service = ? AND status IN ('intent', 'failed', 'error')",
            (service,),
        )
        if names_of is not None:  # the MFS roots: a scan of the service's rows
            found += await fetch(
                self._db,
                f"SELECT {REMOTE_COLUMNS} FROM remote_pins WHERE service = ? AND name = ?",
                (service, names_of),
            )
        rows_by_cid = {row[1]: remote_from_row(row) for row in found}
        if renamed:
            for *row, name in await fetch(
                self._db,
                f"SELECT {R_COLUMNS}, l.name FROM remote_pins AS r JOIN local_pins AS l "
                "ON l.cid = r.cid WHERE r.service = ? AND r.status = 'pinned' AND l.selected "
                "AND r.name IS NOT NULL AND r.name != CASE l.name WHEN '' THEN l.cid "
                "ELSE l.name END "  # cheap, and true for almost none: clip only those
                "AND r.name != clip_name(CASE l.name WHEN '' THEN l.cid ELSE l.name END)",
                (service,),
            ):
                rows_by_cid[row[1]] = remote_from_row(row)
                wanted[row[1]] = name
        missing = [c for c in cids if c not in rows_by_cid]
        rows_by_cid.update(await self.remote_rows(service, missing))
        return wanted, rows_by_cid, next_after, rowless

    def rowless_mark(self, service: str) -> tuple[int, int]:
        """Changes, in this process, that may leave a selected local pin without a row on
        `service`: (changes of the local pinset, rows of the service deleted). While it
        stays the same, no selected local pin has lost its row there (`plan_view`'s
        `with_rowless`); a row added or changed only makes fewer of them."""
        return self._local_changes, self._removals.get(service, 0)

    @contextlib.asynccontextmanager
    async def tracking(self, service: str, before: float) -> AsyncIterator[Tracking]:
        """The service's pending requests (queued or pinning) last updated before `before`,
        noted in a temporary table. `Tracking.take` hands them out as a listing shows them,
        so a status round over a million pending pins keeps memory flat."""
        columns = "requestid TEXT NOT NULL, cid TEXT NOT NULL, created TEXT"
        async with self._temp_table("tracked", service, columns) as table:
            async with self._temp_transaction():
                noted = await self._db.execute(
                    f"INSERT INTO {table.name} SELECT requestid, cid, created FROM remote_pins "
                    "INDEXED BY remote_pins_by_status WHERE service = ? "
                    "AND status IN ('queued', 'pinning') "
                    "AND requestid IS NOT NULL AND updated < ?",
                    (service, before),
                )
                await self._db.execute(table.index("requestid"))
            yield Tracking(self, service, table.name, noted.rowcount)

    async def known_cids(self, service: str, among: Collection[str] | None = None) -> set[str]:
        """Which of `among` (default: all) are selected local pins or have a row on the
        service: the CIDs a service's listing is matched against."""
        if among is None:
            rows = await fetch(
                self._db,
                "SELECT cid FROM local_pins WHERE selected "
                "UNION SELECT cid FROM remote_pins WHERE service = ?",
                (service,),
            )
            return {cid for (cid,) in rows}
        found: set[str] = set()
        wanted = list(among)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await fetch(
                self._db,
                f"SELECT cid FROM local_pins WHERE selected AND cid IN ({marks}) "
                f"UNION SELECT cid FROM remote_pins WHERE service = ? AND cid IN ({marks})",
                (*chunk, service, *chunk),
            )
            found.update(cid for (cid,) in rows)
        return found

    async def remote_rows(self, service: str, cids: Collection[str]) -> dict[str, RemotePin]:
        """The service's rows for `cids` (those that have one)."""
        out: dict[str, RemotePin] = {}
        wanted = list(dict.fromkeys(cids))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            for row in await fetch(
                self._db,
                f"SELECT {REMOTE_COLUMNS} FROM remote_pins WHERE service = ? "
                f"AND cid IN ({','.join('?' * len(chunk))})",
                (service, *chunk),
            ):
                out[row[1]] = remote_from_row(row)
        return out

    async def surplus(self, service: str, ahead: Sequence[str], replicas: int) -> set[str]:
        """CIDs whose request on `service` is an extra copy: still selected locally, and
        pinned on `replicas` of the services `ahead` of it."""
        if not ahead or replicas > len(ahead):
            return set()
        rows = await fetch(
            self._db,
            "SELECT r.cid FROM remote_pins AS r JOIN local_pins AS l ON l.cid = r.cid "
            "WHERE r.service = ? AND l.selected AND r.requestid IS NOT NULL "
            "AND r.status IN ('queued', 'pinning', 'pinned', 'failed') "
            "AND (SELECT COUNT(*) FROM remote_pins AS p WHERE p.cid = r.cid "
            f"AND p.status = 'pinned' AND p.service IN ({','.join('?' * len(ahead))})) >= ?",
            (service, *ahead, replicas),
        )
        return {cid for (cid,) in rows}

    async def missing_from(
        self, service: str, listed: AsyncIterable[Sequence[str]]
    ) -> list[RemotePin]:
        """The service's `pinned` requests whose requestid is not among `listed` (batches
        of requestids from a full listing), via a temporary table: memory stays flat."""
        async with self._temp_table("listed", service, "requestid TEXT NOT NULL") as table:
            async for batch in listed:
                async with self._temp_transaction():
                    await self._db.executemany(
                        f"INSERT INTO {table.name} VALUES (?)", [(r,) for r in batch]
                    )
            async with self._temp_transaction():
                await self._db.execute(table.index("requestid"))
            rows = await fetch(
                self._db,
                f"SELECT {REMOTE_COLUMNS} FROM remote_pins WHERE service = ? AND status = "
                f"'pinned' AND requestid NOT IN (SELECT requestid FROM {table.name})",
                (service,),
            )
        return [remote_from_row(row) for row in rows]

    @contextlib.asynccontextmanager
    async def staging(self, service: str) -> AsyncIterator[Staging]:
        """A temporary table for a service's full listing (adoption): filled in arrival
        order, then read back in CID order next to the state's rows, so that a million
        listed pins are matched and written walking the state's B-trees in order."""
        columns = (
            "cid TEXT NOT NULL, requestid TEXT NOT NULL, status TEXT NOT NULL, "
            "created TEXT NOT NULL, created_ts REAL NOT NULL, name TEXT, details TEXT, "
            "owned INTEGER NOT NULL"
        )
        async with self._temp_table("staged", service, columns) as table:
            yield Staging(self, service, table)

    @contextlib.asynccontextmanager
    async def _temp_table(self, kind: str, service: str, columns: str) -> AsyncIterator[Temp]:
        """A temporary table of `columns` for one service, there for the duration (a
        leftover of a cancelled run is dropped first)."""
        table = Temp(kind, service)
        async with self._write_lock:
            await self._db.execute(f"DROP TABLE IF EXISTS {table.name}")
            await self._db.execute(f"CREATE TABLE {table.name} ({columns})")
        try:
            yield table
        finally:
            async with self._write_lock:
                await self._db.execute(f"DROP TABLE IF EXISTS {table.name}")

    async def _one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...]:
        rows = await fetch(self._db, sql, params)
        return tuple(next(iter(rows)))

    async def gone_since(self, service: str, before: float) -> list[str]:
        """CIDs that the service holds (as far as pinsyncd knows) and that have been absent
        from the node since before `before` (Unix time)."""
        rows = await fetch(
            self._db,
            "SELECT r.cid FROM remote_pins AS r JOIN local_gone AS g ON g.cid = r.cid "
            "WHERE r.service=? AND g.since <= ? "
            "AND NOT EXISTS (SELECT 1 FROM local_pins AS l WHERE l.cid = r.cid)",
            (service, before),
        )
        return [cid for (cid,) in rows]

    async def failed_for_good(self, services: Sequence[str], attempts: int) -> dict[str, int]:
        """CID -> on how many of `services` it failed `attempts` times or more."""
        if not services:
            return {}
        rows = await fetch(
            self._db,
            f"SELECT cid, COUNT(*) FROM remote_pins WHERE {FAILED_FOR_GOOD_SQL} "
            f"AND service IN ({','.join('?' * len(services))}) GROUP BY cid",
            (attempts, *services),
        )
        return {cid: n for cid, n in rows}

    async def not_pinned(self, service: str, attempts: int) -> int:
        """Requests the service marked `failed`, and adds that failed `attempts` times or more
        without reaching it: what `status --failed` lists."""
        (count,) = await self._one(
            "SELECT COUNT(*) FROM remote_pins WHERE service=? AND "
            f"(status='failed' OR (status='error' AND {FAILED_FOR_GOOD_SQL}))",
            (service, attempts),
        )
        return int(count)

    async def pinned_on(self, services: Sequence[str], at_least: int) -> set[str]:
        """CIDs pinned on at least `at_least` of `services`."""
        if not services or at_least > len(services):
            return set()
        rows = await fetch(
            self._db,
            "SELECT cid FROM remote_pins WHERE status='pinned' "
            f"AND service IN ({','.join('?' * len(services))}) GROUP BY cid HAVING COUNT(*) >= ?",
            (*services, at_least),
        )
        return {cid for (cid,) in rows}

    # --- remote pins ------------------------------------------------------------------------

    async def remote_pins(self, service: str) -> dict[str, RemotePin]:
        rows = await fetch(
            self._db, f"SELECT {REMOTE_COLUMNS} FROM remote_pins WHERE service=?", (service,)
        )
        return {row[1]: remote_from_row(row) for row in rows}

    async def save(self, records: Iterable[RemotePin]) -> None:
        """Insert or update rows, all in one committed transaction."""
        # In key order: fewer B-tree pages touched when a large batch is written.
        rows = sorted((row_from_remote(r) for r in records), key=lambda row: row[:2])
        if not rows:
            return
        async with self._transaction():
            await self._db.executemany(
                f"INSERT OR REPLACE INTO remote_pins ({REMOTE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def forget(self, service: str, cids: Iterable[str]) -> None:
        cids = list(cids)
        if not cids:
            return
        self._removals[service] = self._removals.get(service, 0) + 1
        async with self._transaction():
            await self._db.executemany(
                "DELETE FROM remote_pins WHERE service=? AND cid=?",
                [(service, cid) for cid in cids],
            )
            # A CID gone from the node is remembered only while some service holds it.
            await self._db.executemany(
                "DELETE FROM local_gone WHERE cid=? "
                "AND NOT EXISTS (SELECT 1 FROM remote_pins WHERE cid=?)",
                [(cid, cid) for cid in cids],
            )
        self._removals[service] += 1

    async def pending(self, service: str) -> int:
        """Requests on `service` sent, or maybe sent, and not yet pinned or failed (from the
        status index: no walk of the service's rows)."""
        marks = ",".join("?" * len(UNFINISHED_STATUSES))
        (count,) = await self._one(
            "SELECT COUNT(*) FROM remote_pins INDEXED BY remote_pins_by_status "
            f"WHERE service = ? AND status IN ({marks})",
            (service, *UNFINISHED_STATUSES),
        )
        return int(count)

    async def counts(self, service: str, *, unsent: bool = True) -> dict[str, int]:
        """Rows by status, plus `unsent`: local pins without a request on the service (a scan
        of the whole local pinset; `unsent=False` skips it)."""
        counts = {status: n for status, n in await fetch(self._db, COUNTS_SQL, (service,))}
        if unsent:
            rows = await fetch(self._db, UNSENT_SQL, (service,))
            counts["unsent"] = next(iter(rows))[0]
        return counts

    async def clear_backoff(
        self, services: Iterable[str], cids: Iterable[str] | None = None
    ) -> tuple[int, int]:
        """Make failed and errored pins (all, or just `cids`) and paused or backing-off
        services due now; returns (pins, services) changed. For `pinsyncd retry`."""
        services = list(services)
        cids = list(cids) if cids is not None else None
        pins = 0
        async with self._transaction():
            for service in services:
                query = (
                    "UPDATE remote_pins SET next_attempt=0 WHERE service=? "
                    "AND status IN ('failed', 'error') AND next_attempt > 0"
                )
                if cids is None:
                    cursor = await self._db.execute(query, (service,))
                    pins += cursor.rowcount
                else:
                    for cid in cids:
                        cursor = await self._db.execute(query + " AND cid=?", (service, cid))
                        pins += cursor.rowcount
            cursor = await self._db.execute(
                "UPDATE services SET paused_until=0, pause_reason=NULL, failures=0 "
                f"WHERE paused_until > 0 AND name IN ({','.join('?' * len(services))})",
                services,
            )
        return pins, cursor.rowcount

    async def failed_due_now(self, attempts: int) -> int:
        """Make failed pins that have not failed `attempts` times due at once (the node is
        back, so a replace has a provider again); returns how many."""
        async with self._transaction():
            cursor = await self._db.execute(
                "UPDATE remote_pins SET next_attempt=0 "
                "WHERE status='failed' AND attempts < ? AND next_attempt > 0",
                (attempts,),
            )
        return cursor.rowcount

    # --- per service ------------------------------------------------------------------------

    async def service_state(self, name: str) -> ServiceState:
        rows = await fetch(
            self._db,
            f"SELECT {SERVICE_COLUMNS} FROM services WHERE name=?",
            (name,),
        )
        last_success = await self.get_meta(last_success_key(name))
        return service_from_row(name, next(iter(rows), None), last_success)

    async def save_service_state(self, state: ServiceState) -> None:
        async with self._transaction():
            await self._db.execute(
                "INSERT OR REPLACE INTO services (name, adopted, paused_until, pause_reason, "
                "last_cycle, last_error, failures, rate, last_verified, down_since, unsent) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    state.name,
                    int(state.adopted),
                    state.paused_until,
                    scrub(state.pause_reason),
                    state.last_cycle,
                    scrub(state.last_error),
                    state.failures,
                    state.rate,
                    state.last_verified,
                    state.down_since,
                    state.unsent,
                ),
            )
            if state.last_success is not None:
                await self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    (last_success_key(state.name), repr(state.last_success)),
                )

    async def previous_peer_ids(self) -> frozenset[str]:
        """Peer ids this node took over (`pinsyncd restore --from-peer`): their requests are
        this device's own, as with `node.previous_peer_ids` in the config."""
        return frozenset(json.loads(await self.get_meta(PREVIOUS_PEER_IDS) or "[]"))

    async def add_previous_peer_ids(self, peer_ids: Iterable[str]) -> list[str]:
        """Take over `peer_ids`; those that are new."""
        known = await self.previous_peer_ids()
        new = sorted(set(peer_ids) - known)
        if new:
            await self.set_meta(PREVIOUS_PEER_IDS, json.dumps(sorted(known | set(new))))
        return new

    def restores(self) -> RestoreLog:
        """What `pinsyncd restore` did, CID by CID."""
        return RestoreLog(self)

    # --- small facts ------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        rows = await fetch(self._db, "SELECT value FROM meta WHERE key=?", (key,))
        return next((value for (value,) in rows), None)

    async def note(self, key: str, fact: Mapping[str, object]) -> bool:
        """Keep `fact` (JSON) under `key` in the meta table for `status`, writing only when it
        changed; True when it differs from what this process noted last (say so then)."""
        text = json.dumps(fact, sort_keys=True)
        if self._noted.get(key) == text:
            return False
        self._noted[key] = text
        if await self.get_meta(key) != text:
            await self.set_meta(key, text)
        return True

    async def set_meta(self, key: str, value: str) -> None:
        async with self._transaction():
            await self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, redact_text(value))
            )

    # --- plumbing ---------------------------------------------------------------------------

    def _temp_transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A transaction that writes only temporary tables: deferred, so it takes no lock on
        the state file (readers and other processes are not held up), and one commit per
        batch rather than one per row."""
        return self._transaction("BEGIN")

    def _transaction(
        self, begin: str = "BEGIN IMMEDIATE"
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return transaction(self._db, self._write_lock, begin)
