"""structlog, configured once: a console renderer on a terminal, JSON lines otherwise (journald
and log shippers). Every registered secret is replaced by `***` in every event before it is
rendered, whatever code logged it. Written to the journal itself, each line carries its
priority (`journal`), so `journalctl -p warning` finds the warnings and errors."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from pinsyncd import journal
from pinsyncd.tokens import Token, TokenSource

_secrets: set[str] = set()


def register_secrets(secrets: Iterable[Token]) -> None:
    """Redact these tokens' values wherever they would appear (tokens not yet read are
    skipped: the client registers a token when it reads it)."""
    for secret in secrets:
        if isinstance(secret, TokenSource) and not secret.loaded:
            continue
        if len(secret.reveal()) >= 4:
            _secrets.add(secret.reveal())


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, BaseException):
        return _redact_value(repr(value))
    return value


def redact_text(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    return str(_redact_value(text))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (an escape sequence in a pin's name or
    a server's message) and lone surrogates are shown as `\\x1b`, `\\ud800`; newlines and
    tabs are kept."""
    return _CONTROL.sub(_escape, text)


def one_line(text: str) -> str:
    """`printable(text)` with newlines and tabs escaped too, for a field of a one-line row."""
    return printable(text).replace("\n", "\\n").replace("\t", "\\t")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def _printable_values(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """For the console renderer, which writes strings as they are."""
    return {key: printable(v) if isinstance(v, str) else v for key, v in event.items()}


def redact(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if not _secrets:
        return event
    return {key: _redact_value(value) for key, value in event.items()}


class CurrentStream:
    """Writes to whatever `sys.stderr` (or `sys.stdout`) is at the time of writing, not at
    configure time (tests and embedders swap them)."""

    def __init__(self, name: str = "stderr") -> None:
        self._name = name

    def _stream(self) -> TextIO:
        return sys.stdout if self._name == "stdout" else sys.stderr

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def flush(self) -> None:
        self._stream().flush()

    def isatty(self) -> bool:
        return self._stream().isatty()

    def fileno(self) -> int:
        return self._stream().fileno()


class WithPriority:
    """A renderer whose lines start with the event's syslog priority, for the journal."""

    def __init__(self, renderer: Any) -> None:
        self._renderer = renderer

    def __call__(self, logger: object, name: str, event: MutableMapping[str, Any]) -> str:
        level = str(event.get("level", name))
        return journal.prefixed(str(self._renderer(logger, name, event)), level)


def configure_logging(
    *,
    level: str = "info",
    json: bool | None = None,
    stream: TextIO | None = None,
    priorities: bool | None = None,
) -> None:
    """`priorities`: the `<N>` prefix of sd-daemon(3) on every line; by default, when
    `stream` is the journal (`journal.is_journal`)."""
    stream = stream or CurrentStream()  # type: ignore[assignment]
    assert stream is not None
    if json is None:
        json = not stream.isatty()
    if priorities is None:
        priorities = journal.is_journal(stream)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    if priorities:
        renderer = WithPriority(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            *([] if json else [_printable_values]),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
