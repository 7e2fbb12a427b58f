"""Whether a stream is systemd's journal, and the priority prefix a line written to it
carries, so that `journalctl -p warning` finds pinsyncd's warnings and errors.

systemd sets `$JOURNAL_STREAM` to the device and inode ("dev:ino") of the stream it connected
to the journal (systemd.exec(5)); a stream is the journal only when its own match, since a
child whose output was redirected inherits the variable. journald reads a line's priority
from a `<N>` prefix (sd-daemon(3)), and takes the prefix off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "info": 6, "debug": 7}
"""syslog priorities by log level: <2> critical, <3> error, <4> warning, <6> info, <7> debug."""
INFO = 6


class HasFileno(Protocol):
    def fileno(self) -> int: ...


def is_journal(stream: HasFileno, env: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journal stream systemd named in `$JOURNAL_STREAM`."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a file (a test's buffer)
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def prefixed(text: str, level: str) -> str:
    """`text` with the priority of `level` before each of its lines (journald reads each line
    as a record of its own)."""
    prefix = f"<{PRIORITIES.get(level, INFO)}>"
    return "\n".join(prefix + line for line in text.split("\n"))


def for_stream(text: str, level: str, stream: HasFileno) -> str:
    """`text` as a line written to `stream` should be: prefixed when it is the journal."""
    return prefixed(text, level) if is_journal(stream) else text
