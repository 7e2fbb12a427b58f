"""A SIGHUP that comes while `pinsyncd run` is still starting (importing, reading its config,
opening the state) would end the process: its default action is to terminate. From the
package's first import in that process it is remembered instead, and the daemon reads its
config again once it handles SIGHUP itself."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

_early = 0


def starting_daemon(argv: list[str]) -> bool:
    """Whether this process is `pinsyncd run` or `pinsyncd serve` (the console script or
    `python -m pinsyncd`; during `-m`'s import of the package, argv[0] is still "-m")."""
    return (
        len(argv) > 1 and argv[1] in ("run", "serve") and Path(argv[0]).name in ("pinsyncd", "-m")
    )


def remember_early() -> None:
    signal.signal(signal.SIGHUP, _remember)


def early() -> int:
    """SIGHUPs that came before the daemon's handler was installed."""
    return _early


def _remember(_signum: int, _frame: FrameType | None) -> None:
    global _early
    _early += 1


if starting_daemon(sys.argv):
    remember_early()
