"""`pinsyncd.sqlite_tx.transaction`, shared by the daemon's state and `serve`'s: a
transaction cancelled at any point (its BEGIN still queued, its body under way, its COMMIT
queued) never leaves the shared connection inside a transaction nobody owns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import pytest

from pinsyncd.sqlite_tx import transaction


@pytest.mark.parametrize("yields_before_cancel", [0, 1, 2, 3, 5, 8])
async def test_a_cancelled_transaction_leaves_the_connection_usable(
    tmp_path: Path, yields_before_cancel: int
) -> None:
    async with aiosqlite.connect(tmp_path / "t.db", isolation_level=None) as db:
        await db.execute("CREATE TABLE t (n INTEGER)")
        lock = asyncio.Lock()

        async def write(n: int) -> None:
            async with transaction(db, lock):
                await db.execute("INSERT INTO t VALUES (?)", (n,))
                await db.execute("INSERT INTO t VALUES (?)", (n,))

        for n in range(20):
            task = asyncio.create_task(write(n))
            for _ in range(yields_before_cancel):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await write(1000 + n)  # "cannot start a transaction within a transaction" if not
        async with db.execute("SELECT n, COUNT(*) FROM t GROUP BY n") as cursor:
            counts = dict(await cursor.fetchall())
        assert all(count == 2 for count in counts.values()), counts  # all or nothing
        assert all(1000 + n in counts for n in range(20))
