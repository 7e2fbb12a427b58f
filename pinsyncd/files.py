"""Reading the small files a person points pinsyncd at (the config, token files) without
trusting what is there: a FIFO or a device must not hang or flood the reader; and writing a
small file whole or not at all."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path


class NotARegularFile(OSError):
    """The path is a FIFO, a socket, a device or a directory, or the file is too large;
    `strerror` says which, in words fit for an error message."""


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them. It is opened without
    blocking (a FIFO with no writer would wait forever) and checked before a byte is read.
    Raises `NotARegularFile`, or the `OSError` of opening it (FileNotFoundError, ...)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(0, f"is not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:
            raise NotARegularFile(0, f"is larger than {_size(limit)}")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 65536))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # it grew while being read
        raise NotARegularFile(0, f"is larger than {_size(limit)}")
    return data


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 2**10} KiB"


def write_whole(path: Path, text: str, *, mode: int) -> None:
    """`text` into `path` (with `mode`) through a temporary file in the same folder, synced
    and renamed over it: a reader sees the old file or the new one, never a part."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
