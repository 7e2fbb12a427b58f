"""A state file that cannot be used: what the error says, how damage (a disk's or a copy's) is
told from other trouble, and setting a damaged file aside (never deleting it)."""

from __future__ import annotations

import time
from pathlib import Path

import aiosqlite
import structlog

log = structlog.get_logger("pinsyncd.state")


class StateError(Exception):
    """The state file cannot be used (unreadable, from a newer pinsyncd, ...)."""


class StateDamaged(StateError):
    """The state file is not a database, or SQLite finds it corrupt."""


_DAMAGE_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)


def is_damage(exc: BaseException) -> bool:
    """Whether `exc` says the file itself is damaged (not busy, locked, full or read-only)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, aiosqlite.DatabaseError)
        and code is not None
        and (code & 0xFF) in _DAMAGE_CODES
    )


def damaged(path: Path, reason: object) -> StateDamaged:
    """The error for a state file found damaged (by SQLite, or by its quick check)."""
    return StateDamaged(f"the state file {path} is damaged: {reason}")


def damaged_message(path: Path, reason: object) -> str:
    """What to tell a user whose state file is damaged."""
    return (
        f"the state file {path} is damaged ({reason}); `pinsyncd run` or `pinsyncd sync` "
        "sets it aside and rebuilds it from the services"
    )


def sqlite_problem(path: Path, exc: BaseException, *, writing: bool) -> str:
    """One line for a user about an SQLite error on the state file at `path`."""
    if is_damage(exc) or not isinstance(exc, aiosqlite.OperationalError):
        return damaged_message(path, exc)
    if writing:
        return f"cannot write the state file {path}: {exc} (what failed was rolled back)"
    return f"cannot read the state file {path}: {exc}"


def set_aside(path: Path) -> Path:
    """Rename a damaged state file (and its -wal and -shm) to `<name>.damaged-<UTC time>`
    beside it; nothing is deleted. The caller holds the state lock."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


def set_aside_damaged(path: Path, damage: StateDamaged) -> None:
    """Set a damaged state file aside (see `set_aside`) and say so; a fresh one is then
    started, and every service's listing rebuilds it (what is there is adopted, not added
    again). Raises `StateError` if the file cannot be moved."""
    try:
        aside = set_aside(path)
    except OSError as error:
        raise StateError(f"{damage}; and it cannot be set aside: {error}") from None
    log.warning(
        f"{damage}; it was moved to {aside.name}, and a fresh state is rebuilt from the "
        "services' listings (what is already there is adopted, not added again)"
    )
