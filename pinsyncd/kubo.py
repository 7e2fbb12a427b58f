"""A client for the local IPFS node's Kubo RPC API: version, identity, the streamed pinset and
best-effort swarm dials.

Every failure to get a usable answer (refused, timed out, cut off, not the Kubo API, garbage)
is a `NodeUnavailable`: the node is treated as offline and asked again later, never a crash.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
from yarl import URL

from pinsyncd import __version__


class NodeError(Exception):
    """The local node could not do what was asked."""


class NodeUnavailable(NodeError):
    """The node is down, unreachable, or answered something that is not the Kubo RPC API."""


class NodeRequestError(NodeError):
    """The node is up but refused this request; `message` is the node's own."""


@dataclass(frozen=True, slots=True)
class LocalPin:
    """One entry of the node's pinset. `name` is "" when unnamed or unsupported (Kubo < 0.26)."""

    cid: str
    name: str
    type: str


@dataclass(frozen=True)
class NodeIdentity:
    peer_id: str
    addresses: tuple[str, ...]
    agent_version: str


@dataclass(frozen=True)
class DialResult:
    address: str
    ok: bool
    error: str | None = None


class LocalNode:
    """Talks to one Kubo RPC endpoint (e.g. http://127.0.0.1:5001). No I/O in the constructor."""

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = 60.0,
        dial_timeout: float = 15.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.api_url = URL(api_url.rstrip("/"))
        self._timeout = timeout
        self._dial_timeout = dial_timeout
        self._session = session
        self._owns_session = session is None
        self._names_supported: bool | None = None
        self.calls: dict[str, int] = {}
        """RPC calls made, by command (`pin/ls`, `id`, ...)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    # --- commands ---------------------------------------------------------------------------

    async def version(self) -> str:
        data = await self._json("version")
        version = data.get("Version")
        if not isinstance(version, str):
            raise self._not_kubo("version", "no Version in the answer")
        return version

    async def identity(self) -> NodeIdentity:
        data = await self._json("id")
        peer_id = data.get("ID")
        addresses = data.get("Addresses") or []
        if not isinstance(peer_id, str) or not isinstance(addresses, list):
            raise self._not_kubo("id", "no ID in the answer")
        return NodeIdentity(
            peer_id=peer_id,
            addresses=tuple(a for a in addresses if isinstance(a, str)),
            agent_version=str(data.get("AgentVersion", "")),
        )

    async def mfs_root(self) -> str:
        """The CID of the node's MFS root (`ipfs files stat /`)."""
        data = await self._json("files/stat", {"arg": "/", "hash": "true"})
        root = data.get("Hash")
        if not isinstance(root, str) or not root:
            raise self._not_kubo("files/stat", "no Hash in the answer")
        return root

    async def iter_pins(self, pin_type: str = "recursive") -> AsyncIterator[LocalPin]:
        """The pinset, one pin at a time as the node streams it (never the whole set as one
        JSON document). Raises `NodeUnavailable` if the stream is cut off or broken, so a
        partial listing is never mistaken for the whole pinset."""
        async for batch in self.iter_pin_batches(pin_type):
            for pin in batch:
                yield pin

    async def iter_pin_batches(self, pin_type: str = "recursive") -> AsyncIterator[list[LocalPin]]:
        """The same listing as `iter_pins`, in the blocks the stream arrives in (up to a few
        thousand pins each), for callers that want one await per block rather than per pin."""
        params: dict[str, str] = {"type": pin_type, "stream": "true"}
        if self._names_supported is not False:
            params["names"] = "true"
        try:
            async for batch in self._stream_pins(params):
                yield batch
        except NodeRequestError as exc:
            if "names" not in params or "names" not in str(exc).lower():
                raise
            self._names_supported = False  # Kubo < 0.26: list without names from now on
            del params["names"]
            async for batch in self._stream_pins(params):
                yield batch

    async def swarm_connect(self, addresses: Iterable[str]) -> list[DialResult]:
        """Dial each address, best effort: failures are returned, never raised."""
        unique = list(dict.fromkeys(addresses))
        return list(await asyncio.gather(*(self._dial(address) for address in unique)))

    # --- plumbing ---------------------------------------------------------------------------

    async def _dial(self, address: str) -> DialResult:
        try:
            await self._json("swarm/connect", {"arg": address}, dial=True)
        except NodeError as exc:
            return DialResult(address, False, str(exc))
        return DialResult(address, True)

    def _session_for_call(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No keep-alive: calls are few, and a pooled connection to a node that has since
            # stopped would report "dropped" instead of "cannot connect".
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                headers={"User-Agent": f"pinsyncd/{__version__}"},
            )
            self._owns_session = True
        return self._session

    def _count(self, command: str) -> None:
        self.calls[command] = self.calls.get(command, 0) + 1

    async def _json(
        self, command: str, params: Mapping[str, str] | None = None, *, dial: bool = False
    ) -> dict[str, Any]:
        self._count(command)
        url = self.api_url / "api" / "v0"
        url = url.joinpath(*command.split("/"))
        limit = self._dial_timeout if dial else self._timeout
        client_timeout = aiohttp.ClientTimeout(total=limit)
        try:
            async with self._session_for_call().post(
                url, params=params, timeout=client_timeout
            ) as response:
                body = await response.read()
                if response.status != 200:
                    raise self._http_error(command, response.status, body)
        except TimeoutError:  # first: aiohttp's read timeouts are ClientErrors too
            raise NodeUnavailable(
                f"node unreachable: {self.api_url} gave no answer to {command} within {limit:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from None
        try:
            data = json.loads(body)
        except ValueError:
            raise self._not_kubo(command, "the answer is not JSON") from None
        if not isinstance(data, dict):
            raise self._not_kubo(command, "the answer is not a JSON object")
        return data

    async def _stream_pins(self, params: dict[str, str]) -> AsyncIterator[list[LocalPin]]:
        self._count("pin/ls")
        url = self.api_url / "api" / "v0" / "pin" / "ls"
        # No total limit on a stream of a large pinset; a stall of `timeout` is an error.
        client_timeout = aiohttp.ClientTimeout(
            total=None, connect=min(self._timeout, 10.0), sock_read=self._timeout
        )
        try:
            async with self._session_for_call().post(
                url, params=params, timeout=client_timeout
            ) as response:
                if response.status != 200:
                    raise self._http_error("pin/ls", response.status, await response.read())
                # Whole blocks of lines as they arrive, each parsed by one json.loads: per
                # line, aiohttp's readline and json.loads cost more than the rest of a cycle.
                partial: list[bytes] = []  # the start of a line whose end has not come yet
                async for chunk in response.content.iter_any():
                    end = chunk.rfind(b"\n") + 1
                    if not end:
                        partial.append(chunk)
                        continue
                    block = b"".join([*partial, chunk[:end]]) if partial else chunk[:end]
                    partial = [chunk[end:]] if end < len(chunk) else []
                    pins, error = self._parse_pin_block(block)
                    if pins:
                        yield pins
                    if error is not None:
                        raise error
                pins, error = self._parse_pin_block(b"".join(partial))
                if pins:
                    yield pins
                if error is not None:
                    raise error
        except TimeoutError:
            raise NodeUnavailable(
                f"node unreachable: the pin/ls stream from {self.api_url} stalled for "
                f"more than {self._timeout:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc, during="pin/ls") from None

    def _parse_pin_block(self, block: bytes) -> tuple[list[LocalPin], NodeError | None]:
        """The pins of a block of whole stream lines, and the error to raise after them (the
        pins before a bad line are still listed, as when the lines come one by one)."""
        lines = [line for line in block.split(b"\n") if line.strip()]
        if not lines:
            return [], None
        try:
            entries = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            entries = None
        bad: NodeError | None = None
        if entries is None or len(entries) != len(lines):
            # Not one JSON value per line: line by line, so the first bad line is the error.
            entries = []
            for line in lines:
                try:
                    entries.append(self._parse_json_line(line))
                except NodeError as exc:
                    bad = exc
                    break
        pins: list[LocalPin] = []
        try:
            self._pins_of(entries, pins)
        except NodeError as exc:
            return pins, exc
        return pins, bad

    def _pins_of(self, entries: list[Any], pins: list[LocalPin]) -> None:
        """Appends the pins of parsed stream lines to `pins`, up to a line that raises."""
        for entry in entries:
            if type(entry) is dict:
                cid = entry.get("Cid")
                if type(cid) is str and cid:  # the common case, without the checks below
                    name = entry.get("Name", "")
                    kind = entry.get("Type", "")
                    pins.append(
                        LocalPin(
                            cid,
                            name if type(name) is str else "",
                            kind if type(kind) is str else str(kind),
                        )
                    )
                    continue
            pins.extend(self._parse_entry(entry))

    def _parse_json_line(self, line: bytes) -> Any:
        try:
            return json.loads(line)
        except ValueError:
            raise NodeUnavailable(
                f"node unreachable: the pin/ls stream from {self.api_url} was cut off or "
                "is not JSON"
            ) from None

    def _parse_entry(self, entry: Any) -> list[LocalPin]:
        if not isinstance(entry, dict):
            raise self._not_kubo("pin/ls", "a stream line is not a JSON object")
        cid = entry.get("Cid")
        if isinstance(cid, dict):  # some encoders send {"/": "bafy..."}
            cid = cid.get("/")
        if isinstance(cid, str) and cid:
            return [LocalPin(cid, _name_of(entry), str(entry.get("Type", "")))]
        if entry.get("Type") == "error" or "Message" in entry:
            raise NodeRequestError(f"node error during pin/ls: {entry.get('Message', entry)}")
        keys = entry.get("Keys")
        if isinstance(keys, dict):  # a node that ignored stream=true: {"Keys": {cid: {...}}}
            return [
                LocalPin(str(c), _name_of(v), str(v.get("Type", "")))
                for c, v in keys.items()
                if isinstance(v, dict)
            ]
        raise self._not_kubo("pin/ls", "a stream line has no Cid")

    def _http_error(self, command: str, status: int, body: bytes) -> NodeError:
        message = None
        try:
            data = json.loads(body)
            if isinstance(data, dict) and isinstance(data.get("Message"), str):
                message = data["Message"]
        except ValueError:
            pass
        if message is not None and status in (400, 500):
            return NodeRequestError(f"node refused {command}: {message}")
        if status in (404, 405):
            return self._not_kubo(command, f"HTTP {status}")
        if status == 403:
            return NodeUnavailable(
                f"node unreachable: {self.api_url} refused {command} with HTTP 403 "
                "(API.Authorizations or API.HTTPHeaders may need pinsyncd allowed)"
            )
        return NodeUnavailable(
            f"node unreachable: {self.api_url} answered {command} with HTTP {status}"
        )

    def _not_kubo(self, command: str, why: str) -> NodeUnavailable:
        return NodeUnavailable(
            f"node unreachable: {self.api_url} does not look like a Kubo RPC API "
            f"({command}: {why}); check node.api in the config"
        )

    def _unreachable(self, exc: aiohttp.ClientError, during: str | None = None) -> NodeUnavailable:
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.os_error.strerror or str(exc.os_error)
            return NodeUnavailable(f"node unreachable: cannot connect to {self.api_url}: {reason}")
        what = f" during {during}" if during else ""
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return NodeUnavailable(f"node unreachable: {self.api_url} dropped the connection{what}")
        return NodeUnavailable(f"node unreachable: {self.api_url}{what}: {exc}")


def _name_of(entry: Mapping[str, Any]) -> str:
    name = entry.get("Name")
    return name if isinstance(name, str) else ""
