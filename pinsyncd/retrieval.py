"""Fetching one CID into a Kubo node and checking what arrived: a streamed `pin/add` with
progress, cut off when it stops making progress (not after a total time, so a large DAG that
keeps arriving is never cut off), the peers the node is connected to, and `repo/verify`.

`pin/add?progress=true` sends `{"Progress": nodes, "Bytes": bytes}` every 500 ms, even
when nothing changed (Kubo 0.42; with nothing fetched yet it is `{}`), then `{"Pins":
[...]}`. An error met once the stream has begun comes only in the `X-Stream-Error` trailer,
which `rpc_stream.StreamedPost` reads.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pinsyncd import __version__
from pinsyncd.kubo import (
    MAX_ERROR_BODY,
    MAX_LINE,
    LocalNode,
    NodeRequestError,
    NodeUnavailable,
    safe_text,
)
from pinsyncd.rpc_stream import StreamDropped, StreamedPost


@dataclass(frozen=True)
class Fetch:
    """How one `pin/add` ended: `pinned` (the whole DAG is in the node), or stalled."""

    pinned: bool
    blocks: int
    size: int
    seconds: float


class ProgressWatch:
    """Whether a fetch still moves: it stalls when its counts have not changed for `limit`
    seconds. The time is given, never read here."""

    def __init__(self, limit: float, now: float) -> None:
        self.limit = limit
        self.blocks = 0
        self.size = 0
        self._since = now

    def update(self, blocks: int, size: int, now: float) -> None:
        if (blocks, size) != (self.blocks, self.size):
            self.blocks, self.size = blocks, size
            self._since = now

    def stalled(self, now: float) -> bool:
        return now - self._since > self.limit


class FetchingNode(LocalNode):
    """A Kubo RPC client with the calls a restore drill makes on its throwaway node."""

    async def fetch(
        self, cid: str, *, no_progress: float, clock: Callable[[], float] = time.monotonic
    ) -> Fetch:
        """Pin `cid` recursively, fetching what is missing from the connected peers; give up
        once no block has arrived for `no_progress` seconds. Raises `NodeError` when the
        node fails (an error answer, or one in the stream's trailer)."""
        started = clock()
        watch = ProgressWatch(no_progress, started)
        params = {"arg": cid, "recursive": "true", "progress": "true"}
        try:
            async with contextlib.aclosing(
                self._stream("pin/add", params, read_timeout=no_progress)
            ) as lines:
                async for line in lines:
                    if "Pins" in line:
                        return Fetch(True, watch.blocks, watch.size, clock() - started)
                    watch.update(_count(line, "Progress"), _count(line, "Bytes"), clock())
                    if watch.stalled(clock()):
                        return Fetch(False, watch.blocks, watch.size, clock() - started)
        except TimeoutError:  # not even the ticker's lines came
            return Fetch(False, watch.blocks, watch.size, clock() - started)
        raise NodeRequestError("node error during pin/add: the answer ended without the pin")

    async def peers(self) -> set[str]:
        """The peer ids the node is connected to now."""
        data = await self._json("swarm/peers")
        peers = data.get("Peers") or []
        if not isinstance(peers, list):
            raise self._not_kubo("swarm/peers", "no Peers in the answer")
        return {p["Peer"] for p in peers if isinstance(p, dict) and isinstance(p.get("Peer"), str)}

    async def verify_repo(self, *, no_progress: float) -> tuple[int, list[str]]:
        """`repo/verify`: read every block of the repo and check it against its hash; (the
        blocks checked, the messages about corrupt ones)."""
        checked = 0
        corrupt: list[str] = []
        try:
            async with contextlib.aclosing(
                self._stream("repo/verify", {}, read_timeout=no_progress)
            ) as lines:
                async for line in lines:
                    message = line.get("Msg")
                    if isinstance(message, str) and message.startswith("block "):
                        corrupt.append(safe_text(message))
                    checked = max(checked, _count(line, "Progress"))
        except TimeoutError:
            raise NodeUnavailable(
                f"node unreachable: repo/verify on {self.api_url} said nothing for {no_progress:g}s"
            ) from None
        return checked, corrupt

    async def _stream(
        self, command: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The JSON objects of a streamed RPC answer, one a line. No data for `read_timeout`
        raises `TimeoutError`; the node's errors are `NodeError`s."""
        self._count(command)
        url = (self.api_url / "api" / "v0").joinpath(*command.split("/")).with_query(params)
        post = StreamedPost(
            url,
            headers={"User-Agent": f"pinsyncd/{__version__}"},
            connect_timeout=min(self._timeout, 10.0),
            read_timeout=read_timeout,
        )
        try:
            async with post as response:
                if response.status != 200:
                    body = await response.read(MAX_ERROR_BODY)
                    raise self._http_error(command, response.status, body)
                buffer = b""
                async for chunk in response.chunks():
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    if len(buffer) > MAX_LINE:
                        raise NodeUnavailable(f"node unreachable: a {command} line is too long")
                    for line in lines:
                        if line.strip():
                            yield _object(command, line)
                if buffer.strip():
                    yield _object(command, buffer)
                if failure := response.trailers.get("x-stream-error"):
                    raise NodeRequestError(f"node error during {command}: {safe_text(failure)}")
        except TimeoutError:
            raise
        except StreamDropped:
            raise NodeUnavailable(
                f"node unreachable: {self.api_url} dropped the connection during {command}"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise NodeUnavailable(
                f"node unreachable: cannot connect to {self.api_url}: {reason}"
            ) from None


def _object(command: str, line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        raise NodeUnavailable(f"node unreachable: a {command} line is not JSON") from None
    if not isinstance(value, dict):
        raise NodeUnavailable(f"node unreachable: a {command} line is not a JSON object")
    if value.get("Type") == "error" and isinstance(value.get("Message"), str):
        raise NodeRequestError(f"node error during {command}: {safe_text(value['Message'])}")
    return value


def _count(line: Mapping[str, Any], key: str) -> int:
    value = line.get(key, 0)
    return value if type(value) is int and value >= 0 else 0
