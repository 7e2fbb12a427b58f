"""Progress of a restore: a bar on a terminal (CIDs done of all, bytes fetched, failures),
a log line at most every 10 seconds otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import structlog

from pinsyncd.kubo import PinProgress
from pinsyncd.progress import terminal_bar
from pinsyncd.sizes import human_bytes
from pinsyncd.store.restores import Outcome, RestoreItem

log = structlog.get_logger("pinsyncd.restore")
LOG_EVERY = 10.0


class RestoreProgress:
    def __init__(
        self,
        total: int,
        *,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.total = total
        self.done = 0
        self.failed = 0
        self._settled_bytes = 0
        self._in_flight: dict[str, int] = {}  # cid -> bytes so far
        self._clock = clock
        self._logged = clock()
        self._bar: Any = None
        self._task: Any = None

    @property
    def bytes(self) -> int:
        return self._settled_bytes + sum(self._in_flight.values())

    def __enter__(self) -> Self:
        if self.terminal and self.total:
            self._bar = terminal_bar("note")
            self._task = self._bar.add_task("restoring", total=self.total, note="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def fetching(self, cid: str, progress: PinProgress) -> None:
        self._in_flight[cid] = progress.bytes
        self._show()

    def settled(self, item: RestoreItem) -> None:
        self._in_flight.pop(item.cid, None)
        self._settled_bytes += item.bytes
        self.done += 1
        self.failed += item.outcome is Outcome.FAILED
        self._show(force=self.done == self.total)

    def _show(self, *, force: bool = False) -> None:
        note = f"{human_bytes(self.bytes)} fetched" + (
            f", {self.failed} failed" if self.failed else ""
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, note=note)
            return
        now = self._clock()
        if force or now - self._logged >= LOG_EVERY:
            self._logged = now
            log.info(
                "restoring",
                done=self.done,
                total=self.total,
                failed=self.failed,
                bytes=self.bytes,
            )
