"""Access tokens: read from an environment variable or a file, never shown in logs or errors.
A `TokenSource` reads its token only when a request is about to be sent, so the commands that
send nothing (`status`, `sync --dry-run`) need no token at all."""

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pinsyncd.files import NotARegularFile, read_capped


class Secret:
    """A value whose repr and str never reveal it; `source` says where it came from."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(from {self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class TokenError(ValueError):
    """The token could not be read; the message names the source, never the value."""


@dataclass(frozen=True)
class LoadedToken:
    secret: Secret
    warning: str | None = None


def expand_path(raw: str, env: Mapping[str, str]) -> Path:
    """Expand `${VAR}` and `~` in a path; `${CREDENTIALS_DIRECTORY}` is how systemd credentials
    are named (LoadCredential=)."""
    missing = [name for name in _referenced_vars(raw) if name not in env]
    if missing:
        raise TokenError(f"{raw!r} refers to ${{{missing[0]}}}, which is not set")
    expanded = raw
    for name in _referenced_vars(raw):
        expanded = expanded.replace(f"${{{name}}}", env[name]).replace(f"${name}", env[name])
    return Path(expanded).expanduser()


def _referenced_vars(raw: str) -> list[str]:
    return re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", raw)


MAX_TOKEN_FILE = 64 * 2**10
"""A token is a few hundred bytes; a larger file is not a token file (or is `/dev/zero`)."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def token_from_env(name: str, env: Mapping[str, str]) -> LoadedToken:
    value = env.get(name)
    if value is None:
        raise TokenError(f"environment variable {name} is not set")
    value = value.strip()
    if not value:
        raise TokenError(f"environment variable {name} is empty")
    _check_printable(value, f"environment variable {name}")
    return LoadedToken(Secret(value, f"${name}"))


def token_from_file(raw_path: str, env: Mapping[str, str], base: Path | None = None) -> LoadedToken:
    """A token file's value: a regular file of at most 64 KiB, read without blocking (a FIFO
    is refused, not waited on), without the surrounding whitespace (the trailing newline
    editors add); a token with a control character inside is refused. A relative path is
    taken from `base` (the config's folder)."""
    path = expand_path(raw_path, env)
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        value = read_capped(path, MAX_TOKEN_FILE).decode("utf-8").strip()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TokenError(f"token file {path} does not exist") from None
    except PermissionError:
        raise TokenError(f"token file {path} is not readable by this user") from None
    except IsADirectoryError:
        raise TokenError(f"token file {path} is a directory") from None
    except UnicodeDecodeError:
        raise TokenError(f"token file {path} is not UTF-8 text") from None
    except NotARegularFile as exc:
        raise TokenError(f"token file {path} {exc.strerror}") from None
    except OSError as exc:
        raise TokenError(f"token file {path}: {exc.strerror}") from None
    if not value:
        raise TokenError(f"token file {path} is empty")
    _check_printable(value, f"token file {path}")
    warning = None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warning = f"token file {path} is readable by other users; chmod 600 it"
    return LoadedToken(Secret(value, str(path)), warning)


def _check_printable(value: str, source: str) -> None:
    """A control character (a second line, a NUL) cannot go into an HTTP header."""
    if _CONTROL.search(value):
        raise TokenError(
            f"{source} holds a control character inside the token (two lines?); "
            "it must be the token alone"
        )


class TokenSource:
    """Where one service's token comes from (`token_env` or `token_file`), read the first
    time it is needed and kept; like `Secret`, its repr and str never reveal the value.
    `key` and `line` say where the config names it, for error messages."""

    __slots__ = ("_base", "_env", "_secret", "key", "kind", "line", "name", "source")

    def __init__(
        self,
        kind: str,
        name: str,
        env: Mapping[str, str],
        *,
        key: str = "",
        line: int | None = None,
        base: Path | None = None,
    ) -> None:
        self.kind = kind  # "env" or "file"
        self._base = base  # a relative file is taken from here (the config's folder)
        self.name = name  # the variable's name, or the path as written
        self._env = env
        self.key = key
        self.line = line
        self.source = f"${name}" if kind == "env" else name
        self._secret: Secret | None = None

    def load(self) -> LoadedToken:
        """Read the token (again); raises TokenError naming the source, never the value."""
        if self.kind == "env":
            loaded = token_from_env(self.name, self._env)
        else:
            loaded = token_from_file(self.name, self._env, self._base)
        self._secret = loaded.secret
        self.source = loaded.secret.source
        return loaded

    @property
    def loaded(self) -> bool:
        return self._secret is not None

    def reveal(self) -> str:
        """The token, read now if it was not yet; raises TokenError if it cannot be."""
        return (self._secret or self.load().secret).reveal()

    def __repr__(self) -> str:
        return f"TokenSource(from {self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenSource) and (other.kind, other.name, other._secret) == (
            self.kind,
            self.name,
            self._secret,
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.name))


Token = Secret | TokenSource
"""A service's token: a value already read, or where to read it when a request needs it."""
