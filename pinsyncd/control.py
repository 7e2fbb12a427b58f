"""The daemon's control socket, `<state>.sock` beside the state file: how `sync --once`,
`adopt` and `retry` typed in a shell ask a running daemon to do the work, instead of racing
it on the same state and the same services.

HTTP over a Unix socket (aiohttp on both ends), mode 0600, so only the daemon's user (and
root) can use it. A request is `POST /<command>` with a JSON body; the answer streams JSON
lines: `{"log": EVENT, ...fields}` for progress, `{"print": TEXT}` for what the command prints,
and last `{"exit": CODE, "error": TEXT or null}`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

log = structlog.get_logger("pinsyncd.control")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any], Emit], Awaitable[tuple[int, str | None]]]
"""Carries out one command: (the request's body, a way to send progress) -> (exit, error)."""

_MAX_PATH = 100  # sun_path holds 108 bytes; longer paths go through /proc/self/fd


def socket_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".sock")


@contextlib.contextmanager
def _bindable(path: Path) -> Iterator[str]:
    """`path` as a socket address: itself, or when too long for a Unix socket, the same file
    through an open descriptor of its folder (`/proc/self/fd/N/name`)."""
    if len(os.fsencode(path)) <= _MAX_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    """Serves `handlers` on the socket; `stop()` is idempotent and removes the socket."""

    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self._handlers = dict(handlers)
        self._runner: web.AppRunner | None = None

    async def start(self) -> bool:
        """Listen; False (logged) when the socket cannot be made, e.g. a read-only folder."""
        app = web.Application()
        for name in self._handlers:
            app.router.add_post(f"/{name}", self._serve)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            self.path.unlink(missing_ok=True)  # a leftover: whoever holds the lock owns it
            umask = os.umask(0o177)
            try:
                with _bindable(self.path) as address:
                    await web.UnixSite(runner, address).start()
            finally:
                os.umask(umask)
        except OSError as exc:
            await runner.cleanup()
            log.warning(
                "no control socket: sync --once, adopt and retry will wait for this daemon",
                socket=str(self.path),
                error=str(exc),
            )
            return False
        self._runner = runner
        return True

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            self.path.unlink(missing_ok=True)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        handler = self._handlers[request.path.lstrip("/")]
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"exit": 2, "error": "the request is not a JSON object"})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        async def emit(line: dict[str, Any]) -> None:
            await response.write(json.dumps(line).encode() + b"\n")

        try:
            code, error = await handler(body, emit)
        except Exception as exc:  # reported to the caller; the daemon goes on
            log.exception("control request failed", command=request.path)
            code, error = 1, f"internal error in the daemon: {exc!r}"
        with contextlib.suppress(ConnectionError):  # the caller went away (Ctrl-C)
            await emit({"exit": code, "error": error})
            await response.write_eof()
        return response


async def ask(
    path: Path,
    command: str,
    body: dict[str, Any],
    on_line: Callable[[dict[str, Any]], None],
    *,
    connect_timeout: float = 5.0,
) -> tuple[int, str | None] | None:
    """Ask the daemon listening on `path` to run `command`; each progress line goes to
    `on_line`. Returns (exit, error), or None when nothing answers on the socket."""
    with _bindable(path) as address:
        connector = aiohttp.UnixConnector(path=address)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            try:
                async with session.post(f"http://pinsyncd/{command}", json=body) as response:
                    async for raw in response.content:
                        if not raw.strip():
                            continue
                        line = json.loads(raw)
                        if "exit" in line:
                            return int(line["exit"]), line.get("error")
                        on_line(line)
            except (aiohttp.ClientConnectorError, FileNotFoundError, ConnectionRefusedError):
                return None
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                return 1, f"the daemon's answer broke off: {exc}"
    return 1, "the daemon's answer broke off before the end"
