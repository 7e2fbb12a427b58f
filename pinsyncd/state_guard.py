"""How the daemon lives with a state file it cannot use for a while.

A full disk, a read-only remount or an I/O error while writing: the daemon keeps running.
What failed is rolled back (an add is only sent after its intent is committed, so nothing is
sent that the state does not know of), one warning is logged, `/healthz` answers 503 with
the reason, and every loop tries again on its own schedule; the first success logs that the
state is writable again. Damage (SQLite finds the file corrupt) is different: it is raised
as `StateDamaged`, and the daemon sets the file aside and starts again on a fresh one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiosqlite
import structlog

from pinsyncd.store import damaged, is_damage

log = structlog.get_logger("pinsyncd")


class StateGuard:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem: str | None = None  # why the state cannot be written now (None: it can)
        self.failures = 0  # writes that failed since the state was last fine

    @contextmanager
    def watching(self, *, writes: bool = False) -> Iterator[None]:
        """Run a step on the state: a state error other than damage is logged (once) and
        swallowed, so the caller's loop goes on; `self.problem` says why. Only a step that
        always `writes` (the node listing's) clears the problem when it succeeds: one that
        may only read proves nothing."""
        try:
            yield
        except aiosqlite.Error as exc:
            if is_damage(exc):
                raise damaged(self.path, exc) from None
            self.failures += 1
            if self.problem is None:
                log.warning(
                    f"cannot write the state file {self.path}: {exc}; nothing new is sent "
                    "until it can be written again, and every loop keeps trying",
                )
            self.problem = str(exc)
        else:
            if writes and self.problem is not None:
                log.info(
                    f"the state file {self.path} can be written again",
                    failed_writes=self.failures,
                )
                self.problem, self.failures = None, 0
