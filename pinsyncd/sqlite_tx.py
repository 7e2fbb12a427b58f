"""One SQLite transaction on an aiosqlite connection that several coroutines share: taken in
turns under an `asyncio.Lock`, and never left open by a cancellation.

aiosqlite runs statements one after another on its own thread. A `BEGIN` whose await is
cancelled still runs there; the `ROLLBACK` queued behind it undoes it, so the connection is
never left inside a transaction that nobody owns (the next `BEGIN` would fail with "cannot
start a transaction within a transaction", for ever). A `COMMIT` whose await is cancelled
still runs too, before any statement queued after it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiosqlite


@contextlib.asynccontextmanager
async def transaction(
    db: aiosqlite.Connection, lock: asyncio.Lock, begin: str = "BEGIN IMMEDIATE"
) -> AsyncIterator[None]:
    async with lock:
        try:
            await db.execute(begin)  # inside the try: see above
            yield
        except BaseException:
            with contextlib.suppress(aiosqlite.Error):
                await asyncio.shield(db.execute("ROLLBACK"))
            raise
        await db.execute("COMMIT")
