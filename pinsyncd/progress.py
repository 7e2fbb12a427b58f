"""Progress of the adds during a large `pinsyncd sync --once`: a progress bar per service on a
terminal (rich), plain log lines at most every 10 seconds otherwise."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Self

import structlog

log = structlog.get_logger("pinsyncd.progress")
LOG_EVERY = 10.0


def terminal_bar(*fields: str) -> Any:
    """A started rich progress bar on stderr: each task's description, its bar, done of
    total, then a text column for each of `fields` (a task field's name)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f"{{task.fields[{field}]}}") for field in fields),
        console=Console(stderr=True),
        transient=False,
    )
    bar.start()
    return bar


class SendProgress:
    def __init__(self, *, terminal: bool | None = None) -> None:
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._logged: dict[str, float] = {}

    def __enter__(self) -> Self:
        if self.terminal:
            self._bar = terminal_bar()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, service: str, done: int, total: int) -> None:
        """`done` of `total` adds and replaces sent to `service` in this cycle."""
        if self._bar is not None:
            if service not in self._tasks:
                self._tasks[service] = self._bar.add_task(f"{service}: sending", total=total)
            self._bar.update(self._tasks[service], completed=done, total=total)
            return
        now = time.monotonic()
        if done == total or now - self._logged.get(service, 0.0) >= LOG_EVERY:
            self._logged[service] = now
            log.info("sending", service=service, done=done, total=total)
