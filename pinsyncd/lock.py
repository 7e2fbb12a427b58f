"""One writer per state file: an exclusive `flock` on `<state>.lock`, held by every process that
calls a service or writes the state, for as long as it runs. The kernel drops the lock when
the process dies, so a `kill -9` leaves nothing stale behind. The holder writes its PID and
command into the file, so a second process can say who holds it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pinsyncd.exits import EX_LOCKED as EX_LOCKED


def lock_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".lock")


@dataclass(frozen=True)
class Holder:
    """Who holds a state file's lock, as it wrote itself down (None: not yet written)."""

    pid: int | None = None
    command: str | None = None

    @property
    def is_daemon(self) -> bool:
        return self.command == "run"

    def describe(self) -> str:
        if self.pid is None:
            return "another pinsyncd process"
        what = "the daemon" if self.is_daemon else f"pinsyncd {self.command}"
        return f"{what} (PID {self.pid})"


class StateLock:
    """The lock of one state file. `try_acquire()` never blocks; `release()` is idempotent."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.path = lock_path(state_path)
        self._fd: int | None = None

    def try_acquire(self, command: str) -> Holder | None:
        """Take the lock for `command`: None when taken, else who holds it."""
        if self._fd is not None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except PermissionError:  # made by another user: it can still be locked, not written
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            return holder
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # a read-only lock file: the lock still holds
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command}).encode(), 0)
        self._fd = fd
        return None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # whoever reads it next finds no stale PID
        os.close(fd)

    def holder(self) -> Holder | None:
        """Who holds the lock now (None: nobody)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            return None
        finally:
            os.close(fd)


def _read_holder(fd: int) -> Holder:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return Holder()
    if not isinstance(data, dict):
        return Holder()
    pid, command = data.get("pid"), data.get("command")
    return Holder(
        pid if isinstance(pid, int) else None, command if isinstance(command, str) else None
    )
