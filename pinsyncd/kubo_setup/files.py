"""Writing what `init` and `import-kubo` produce: token files only this user can read, and
the config, each written whole or not at all."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pinsyncd.files import read_capped
from pinsyncd.tokens import Secret


class SetupError(Exception):
    """Something that stops `init` or `import-kubo`, in words for the user."""


def write_secret(path: Path, secret: Secret, *, force: bool) -> bool:
    """Write a secret to `path` with mode 0600 (its folder 0700 when made here). True if
    written; False if the file already holds it. A file holding something else is left
    alone unless `force`."""
    if path.exists() and not force:
        try:
            if read_capped(path, 64 * 1024).decode("utf-8").strip() == secret.reveal():
                return False
        except (OSError, UnicodeDecodeError):
            pass
        raise SetupError(f"{path} exists and holds something else (--force replaces it)")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_whole(path, secret.reveal() + "\n", mode=0o600)
    return True


def write_whole(path: Path, text: str, *, mode: int) -> None:
    """`text` into `path` through a temporary file in the same folder, renamed over it: a
    reader sees the old file or the new one, never a part."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
