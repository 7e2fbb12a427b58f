"""Writing the token files `init` and `import-kubo` produce: only this user can read them,
and each is written whole or not at all (`pinsyncd.files.write_whole`, as the config is)."""

from __future__ import annotations

from pathlib import Path

from pinsyncd.files import read_capped, write_whole
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
