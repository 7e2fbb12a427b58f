"""A client for the local IPFS node's Kubo RPC API: version, identity, the streamed pinset and
best-effort swarm dials.

Every failure to get a usable answer (refused, timed out, cut off, not the Kubo API, a line
of the pin listing longer than `MAX_LINE`) is a `NodeUnavailable`: the node is treated as
offline and asked again later, never a crash. A single listing line that is not a pin is
skipped and counted (`PinListing.bad_lines`); text that is not valid Unicode (a lone
surrogate) is mended, so every CID and name can be stored, logged and sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import aiohttp
from yarl import URL

from pinsyncd import __version__
from pinsyncd.config.schema import UNIX_PREFIX
from pinsyncd.logs import register_secrets
from pinsyncd.rpc_auth import authorization_header
from pinsyncd.rpc_stream import StreamDropped, StreamedPost

if TYPE_CHECKING:
    from pinsyncd.config import Config


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


PIN_TYPES = frozenset({"recursive", "direct", "indirect"})


def pin_kind(listed: str, asked: str) -> str:
    """A listed pin's type: the `Type` its entry carries, which is the truth (ipfs-cluster's
    IPFS proxy lists every pin whatever type is asked for), or the type asked for when the
    entry carries none that Kubo knows."""
    return listed if listed in PIN_TYPES else asked


MAX_ERROR_BODY = 64 * 1024
"""The most of an error answer's body that is read."""

MAX_LINE = 2**20
"""The longest `pin/ls` line read (a pin's line is a CID and a name: well under a KiB)."""


@dataclass
class PinListing:
    """What one listing of the node's pins skipped."""

    bad_lines: int = 0
    """Lines that are not a pin (not JSON, not an object, no `Cid`): left out."""
    examples: list[str] = field(default_factory=list)
    """The first few of them, shortened, for the log."""

    def skip(self, line: bytes | str) -> None:
        self.bad_lines += 1
        if len(self.examples) < 3:
            text = line if isinstance(line, str) else line.decode("utf-8", "replace")
            self.examples.append(safe_text(text[:80]))


def safe_text(text: str) -> str:
    """`text` with lone surrogates (JSON can carry `\\ud800`; UTF-8 cannot) replaced by
    U+FFFD, so it can be stored, logged and sent."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class PinProgress:
    """How much of a DAG a `pin/add` has fetched or walked so far, as Kubo reports it."""

    blocks: int = 0
    bytes: int = 0


class ProgressWatch:
    """Whether a fetch still moves: it stalls when its counts have not grown for `limit`
    seconds. The time is given, never read here."""

    def __init__(self, limit: float, now: float) -> None:
        self.limit = limit
        self.progress = PinProgress()
        self._since = now

    def update(self, blocks: int, size: int, now: float) -> bool:
        """Note a report; whether it is progress."""
        seen = PinProgress(max(blocks, self.progress.blocks), max(size, self.progress.bytes))
        if seen == self.progress:
            return False
        self.progress, self._since = seen, now
        return True

    def stalled(self, now: float) -> bool:
        return now - self._since > self.limit


class PinStalled(NodeError):
    """A `pin/add` made no progress (no new block) for `stall` seconds; `progress` is how far
    it got. The node abandons the pin when the request is closed."""

    def __init__(self, cid: str, progress: PinProgress, stall: float) -> None:
        self.progress = progress
        self.stall = stall
        if progress.blocks:
            why = f"stalled: no new block for {stall:g}s after {progress.blocks} blocks"
        else:
            why = f"no provider: not one block came in {stall:g}s"
        super().__init__(f"{cid}: {why}")


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
        authorization: str | None = None,
    ) -> None:
        self.where = api_url.rstrip("/")
        """The node's address as configured (a URL, or `unix:/path` for a Unix socket)."""
        unix = api_url.startswith(UNIX_PREFIX)
        self._unix_socket = api_url[len(UNIX_PREFIX) :] if unix else None
        self.api_url = URL("http://localhost") if unix else URL(self.where)
        self._headers = {"User-Agent": f"pinsyncd/{__version__}"}
        if authorization is not None:
            self._headers["Authorization"] = authorization
        self._timeout = timeout
        self._dial_timeout = dial_timeout
        self._session = session
        self._owns_session = session is None
        self._names_supported: bool | None = None
        self.calls: dict[str, int] = {}
        """RPC calls made, by command (`pin/ls`, `id`, ...)."""

    @classmethod
    def for_config(cls, config: Config, *, timeout: float | None = None) -> Self:
        """The node of `config`: its address, and its RPC secret when `node.token_file` is
        set (read when the config's tokens were; redacted from the logs)."""
        authorization = None
        if config.node_token is not None:
            authorization = authorization_header(config.node_token.reveal())
            register_secrets([config.node_token])
        limit = config.node.timeout if timeout is None else timeout
        return cls(config.node.api, timeout=limit, authorization=authorization)

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

    async def remote_services(self) -> list[tuple[str, str]]:
        """The pinning services Kubo knows (`ipfs pin remote service ls`): (nickname,
        endpoint). Their keys never come over the RPC: Kubo conceals them."""
        data = await self._json("pin/remote/service/ls")
        found = []
        for entry in data.get("RemoteServices") or []:
            if isinstance(entry, dict):
                name, endpoint = entry.get("Service"), entry.get("ApiEndpoint")
                if isinstance(name, str) and isinstance(endpoint, str):
                    found.append((name, endpoint))
        return found

    async def mfs_policy(self, service: str) -> bool:
        """Whether Kubo's own MFS policy pins the MFS root to `service` (its
        `Pinning.RemoteServices.<service>.Policies.MFS.Enable`)."""
        key = f"Pinning.RemoteServices.{service}.Policies.MFS.Enable"
        value = (await self._json("config", {"arg": key})).get("Value")
        return value is True

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

    async def iter_pin_batches(
        self, pin_type: str = "recursive", listing: PinListing | None = None
    ) -> AsyncGenerator[list[LocalPin], None]:
        """The same listing as `iter_pins`, in the blocks the stream arrives in (up to a few
        thousand pins each), for callers that want one await per block rather than per pin.
        Lines that are not a pin are skipped and counted in `listing`; a listing with such
        lines and no pin at all is not Kubo's (`NodeUnavailable`)."""
        listing = listing if listing is not None else PinListing()
        async for batch in self.parse_pins(self.pin_ls_body(pin_type), listing):
            yield batch

    @property
    def names_supported(self) -> bool | None:
        """Whether the node lists pin names (Kubo 0.26 and later); None until it is known."""
        return self._names_supported

    async def pin_ls_body(
        self, pin_type: str = "recursive", *, names: bool = True
    ) -> AsyncGenerator[bytes, None]:
        """The body of one streamed `pin/ls` of `pin_type` (with names, if asked and the
        node has them), as it arrives (blocks of lines, the last of a block possibly cut),
        unparsed: `parse_pins` reads it. Raises as the listing would: an error in the
        stream's trailer, a cut or stalled stream, a line longer than `MAX_LINE`. Kubo older
        than 0.26 refuses `names` before it streams anything: it is then listed without
        names, from then on."""
        params: dict[str, str] = {"type": pin_type, "stream": "true"}
        if names and self._names_supported is not False:
            params["names"] = "true"
        began = False
        try:
            async for block in self._stream_pins(params):
                began = True
                yield block
            if "names" in params:
                self._names_supported = True
        except NodeRequestError as exc:
            if "names" not in params or "names" not in str(exc).lower() or began:
                raise
            self._names_supported = False  # Kubo < 0.26: list without names from now on
            del params["names"]
            async for block in self._stream_pins(params):
                yield block

    async def parse_pins(
        self, body: AsyncIterable[bytes], listing: PinListing
    ) -> AsyncGenerator[list[LocalPin], None]:
        """The pins of a `pin/ls` body given in blocks as it came (`pin_ls_body`), a block
        of whole lines at a time, each parsed by one `json.loads`: per line, `json.loads`
        costs more than the rest of a cycle. A line that is not a pin is skipped and counted;
        an error line of the node's is raised after the pins before it. (`pin_ls_body` has
        already cut off a line longer than `MAX_LINE`.)"""
        partial: list[bytes] = []  # the start of a line whose end has not come yet
        listed = 0
        skipped_before = listing.bad_lines
        async for chunk in body:
            end = chunk.rfind(b"\n") + 1
            if not end:
                partial.append(chunk)
                continue
            block = b"".join([*partial, chunk[:end]]) if partial else chunk[:end]
            partial = [chunk[end:]] if end < len(chunk) else []
            pins, error = self._parse_pin_block(block, listing)
            if pins:
                listed += len(pins)
                yield pins
            if error is not None:
                raise error
        # The last line has no newline: if it does not parse, the stream was cut.
        pins, error = self._parse_pin_block(b"".join(partial), listing, last=True)
        if pins:
            listed += len(pins)
            yield pins
        if error is not None:
            raise error
        if not listed and listing.bad_lines > skipped_before:
            raise self._not_kubo("pin/ls", "no line of the listing is a pin")

    async def swarm_connect(self, addresses: Iterable[str]) -> list[DialResult]:
        """Dial each address, best effort: failures are returned, never raised."""
        unique = list(dict.fromkeys(addresses))
        return list(await asyncio.gather(*(self._dial(address) for address in unique)))

    async def pin_add(
        self,
        cid: str,
        *,
        name: str = "",
        stall: float = 120.0,
        on_progress: Callable[[PinProgress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> PinProgress:
        """Pin `cid` recursively (with `name`), fetching what the node lacks. No total time
        limit: it gives up only when nothing new has come for `stall` seconds (`PinStalled`).
        Kubo reports progress twice a second whether or not a block came, so progress is
        the count of blocks and bytes growing, not a line arriving."""
        params = {"arg": cid, "recursive": "true", "progress": "true"}
        if name:
            params["name"] = name
        try:
            return await self._pin_add(cid, params, stall, on_progress, clock)
        except NodeRequestError as exc:
            if not name or "name" not in str(exc).lower():
                raise
            del params["name"]  # Kubo < 0.26 names no pin: pin without one
            return await self._pin_add(cid, params, stall, on_progress, clock)

    async def pin_of(self, cid: str) -> LocalPin | None:
        """`cid`'s own pin on the node now, recursive or direct, with its name (`pin/ls?arg=`);
        None when it has none (not pinned, or only inside another pin)."""
        try:
            data = await self._json("pin/ls", {"arg": cid, "type": "all", "names": "true"})
        except NodeRequestError as exc:
            if "not pinned" in str(exc):
                return None
            raise
        keys = data.get("Keys")
        for entry in keys.values() if isinstance(keys, dict) else ():
            kind = entry.get("Type") if isinstance(entry, dict) else None
            if kind in ("recursive", "direct"):
                name = entry.get("Name")
                return LocalPin(cid, name if isinstance(name, str) else "", kind)
        return None

    async def pin_rm(self, cid: str) -> bool:
        """Unpin `cid` (recursive); False when it was not pinned (already removed)."""
        try:
            await self._json("pin/rm", {"arg": cid, "recursive": "true"})
        except NodeRequestError as exc:
            if "not pinned" in str(exc):
                return False
            raise
        return True

    # --- plumbing ---------------------------------------------------------------------------

    async def _pin_add(
        self,
        cid: str,
        params: dict[str, str],
        stall: float,
        on_progress: Callable[[PinProgress], None] | None,
        clock: Callable[[], float],
    ) -> PinProgress:
        watch = ProgressWatch(stall, clock())
        try:
            async with contextlib.aclosing(
                self._stream_json("pin/add", params, read_timeout=stall)
            ) as lines:
                async for line in lines:
                    if "Pins" in line:
                        return watch.progress
                    if watch.update(_count(line, "Progress"), _count(line, "Bytes"), clock()):
                        if on_progress is not None:
                            on_progress(watch.progress)
                    elif watch.stalled(clock()):
                        raise PinStalled(cid, watch.progress, stall)
        except TimeoutError:  # not even Kubo's twice-a-second report came
            raise PinStalled(cid, watch.progress, stall) from None
        raise NodeRequestError("node refused pin/add: the answer ended without the pin")

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
                self._stream_json("repo/verify", {}, read_timeout=no_progress)
            ) as lines:
                async for line in lines:
                    message = line.get("Msg")
                    if isinstance(message, str) and message.startswith("block "):
                        corrupt.append(safe_text(message))
                    checked = max(checked, _count(line, "Progress"))
        except TimeoutError:
            raise NodeUnavailable(
                f"node unreachable: repo/verify on {self.where} said nothing for {no_progress:g}s"
            ) from None
        return checked, corrupt

    async def _stream_json(
        self, command: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The JSON objects of a streamed RPC answer, one a line. No data for `read_timeout`
        raises `TimeoutError`; the node's errors (an error line, or one in the stream's
        `X-Stream-Error` trailer) are `NodeError`s."""
        self._count(command)
        url = (self.api_url / "api" / "v0").joinpath(*command.split("/")).with_query(params)
        post = StreamedPost(
            url,
            headers=self._headers,
            unix_socket=self._unix_socket,
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
                        raise self._not_kubo(command, "an answer line is too long")
                    for line in lines:
                        if line.strip():
                            yield self._stream_object(command, line)
                if buffer.strip():
                    yield self._stream_object(command, buffer)
                if failure := response.trailers.get("x-stream-error"):
                    raise NodeRequestError(f"node refused {command}: {safe_text(failure)}")
        except TimeoutError:  # an OSError too: the caller's to handle, not a broken stream
            raise
        except (StreamDropped, OSError) as exc:
            raise self._stream_broken(command, exc) from None

    def _stream_object(self, command: str, line: bytes) -> dict[str, Any]:
        try:
            value = json.loads(line)
        except ValueError:
            raise self._not_kubo(command, "an answer line is not JSON") from None
        if not isinstance(value, dict):
            raise self._not_kubo(command, "an answer line is not a JSON object")
        if value.get("Type") == "error" and isinstance(value.get("Message"), str):
            raise NodeRequestError(f"node refused {command}: {safe_text(value['Message'])}")
        return value

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
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(self._unix_socket, force_close=True)
                if self._unix_socket is not None
                else aiohttp.TCPConnector(force_close=True)
            )
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
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
                f"node unreachable: {self.where} gave no answer to {command} within {limit:g}s"
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

    async def _stream_pins(self, params: dict[str, str]) -> AsyncIterator[bytes]:
        """The body of one streamed `pin/ls`, as it arrives. Read with `rpc_stream`, not
        aiohttp: an error the node meets once the stream has begun comes only in the
        `X-Stream-Error` trailer, and makes the listing a failed one."""
        self._count("pin/ls")
        url = (self.api_url / "api" / "v0" / "pin" / "ls").with_query(params)
        # No total limit on a stream of a large pinset; a stall of `timeout` is an error.
        post = StreamedPost(
            url,
            headers=self._headers,
            unix_socket=self._unix_socket,
            connect_timeout=min(self._timeout, 10.0),
            read_timeout=self._timeout,
        )
        try:
            async with post as response:
                if response.status != 200:
                    body = await response.read(MAX_ERROR_BODY)
                    raise self._http_error("pin/ls", response.status, body)
                line = 0  # bytes of the line not yet ended
                async for chunk in response.chunks():
                    last = chunk.rfind(b"\n")
                    if last < 0:
                        line += len(chunk)
                    elif line + chunk.find(b"\n") > MAX_LINE:
                        raise self._line_too_long()
                    else:
                        line = len(chunk) - last - 1
                    if line > MAX_LINE:
                        raise self._line_too_long()
                    yield chunk
                if failure := response.trailers.get("x-stream-error"):
                    raise NodeRequestError(
                        f"node error during pin/ls (the listing broke off): {safe_text(failure)}"
                    )
        except TimeoutError:
            raise NodeUnavailable(
                f"node unreachable: the pin/ls stream from {self.where} stalled for "
                f"more than {self._timeout:g}s"
            ) from None
        except (StreamDropped, OSError) as exc:
            raise self._stream_broken("pin/ls", exc) from None

    def _stream_broken(self, command: str, exc: StreamDropped | OSError) -> NodeUnavailable:
        """A streamed call that could not connect, or was cut off."""
        if isinstance(exc, StreamDropped):
            return NodeUnavailable(
                f"node unreachable: {self.where} dropped the connection during {command}"
            )
        reason = exc.strerror or str(exc) or type(exc).__name__
        return NodeUnavailable(f"node unreachable: cannot connect to {self.where}: {reason}")

    def _parse_pin_block(
        self, block: bytes, listing: PinListing, *, last: bool = False
    ) -> tuple[list[LocalPin], NodeError | None]:
        """The pins of a block of whole stream lines, and the error to raise after them (the
        pins before it are still listed, as when the lines come one by one). A line that is
        not a pin is skipped and counted, except a `last` one that is not JSON: a stream
        cut off in the middle of a line."""
        lines = [line for line in block.split(b"\n") if line.strip()]
        if not lines:
            return [], None
        try:
            entries = json.loads(b"[" + b",".join(lines) + b"]")
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            entries = None
        if entries is None or len(entries) != len(lines):
            # Not one JSON value per line: line by line, skipping those that do not parse.
            entries = []
            for line in lines:
                try:
                    entries.append(json.loads(line))
                except (ValueError, RecursionError):
                    if last and line is lines[-1]:
                        pins, error = self._pins_of(entries, listing)
                        return pins, error or self._cut_off()
                    listing.skip(line)
        return self._pins_of(entries, listing)

    def _pins_of(
        self, entries: list[Any], listing: PinListing
    ) -> tuple[list[LocalPin], NodeError | None]:
        """The pins of parsed stream lines, up to a node's error line (returned after them)."""
        pins: list[LocalPin] = []
        for entry in entries:
            if type(entry) is dict:
                cid = entry.get("Cid")
                name = entry.get("Name", "")
                kind = entry.get("Type", "")
                if (  # the common case, without the checks below
                    type(cid) is str
                    and cid
                    and cid.isascii()
                    and type(name) is str
                    and type(kind) is str
                    and kind.isascii()
                ):
                    pins.append(LocalPin(cid, safe_text(name), kind))
                    continue
            try:
                pins.extend(self._parse_entry(entry, listing))
            except NodeRequestError as exc:
                return pins, exc
        return pins, None

    def _cut_off(self) -> NodeUnavailable:
        return NodeUnavailable(
            f"node unreachable: the pin/ls stream from {self.where} was cut off or is not JSON"
        )

    def _line_too_long(self) -> NodeUnavailable:
        return NodeUnavailable(
            f"node unreachable: a pin/ls line from {self.where} is longer than "
            f"{MAX_LINE // 2**20} MiB; the listing was abandoned (not Kubo, or a broken proxy)"
        )

    def _parse_entry(self, entry: Any, listing: PinListing) -> list[LocalPin]:
        if not isinstance(entry, dict):
            listing.skip(json.dumps(entry)[:80])
            return []
        cid = entry.get("Cid")
        if isinstance(cid, dict):  # some encoders send {"/": "bafy..."}
            cid = cid.get("/")
        if isinstance(cid, str) and cid:
            return [LocalPin(safe_text(cid), _name_of(entry), _kind_of(entry))]
        if entry.get("Type") == "error" or "Message" in entry:
            message = safe_text(str(entry.get("Message", entry)))
            raise NodeRequestError(f"node error during pin/ls: {message}")
        keys = entry.get("Keys")
        if isinstance(keys, dict):  # a node that ignored stream=true: {"Keys": {cid: {...}}}
            pins = []
            for key, value in keys.items():
                if isinstance(value, dict):
                    pins.append(LocalPin(safe_text(str(key)), _name_of(value), _kind_of(value)))
                else:
                    listing.skip(str(key)[:80])
            return pins
        listing.skip(json.dumps(entry)[:80])
        return []

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
        if status in (401, 403):
            if "Authorization" in self._headers:
                why = "the secret in node.token_file was refused, or its AllowedPaths leave out "
                why += "/api/v0 (Kubo's API.Authorizations)"
            else:
                why = "the node asks for a secret (Kubo's API.Authorizations is on): put it in a "
                why += "file and name it in node.token_file"
            return NodeUnavailable(
                f"node unreachable: {self.where} refused {command} with HTTP {status}: {why}"
            )
        return NodeUnavailable(
            f"node unreachable: {self.where} answered {command} with HTTP {status}"
        )

    def _not_kubo(self, command: str, why: str) -> NodeUnavailable:
        return NodeUnavailable(
            f"node unreachable: {self.where} does not look like a Kubo RPC API "
            f"({command}: {why}); check node.api in the config"
        )

    def _unreachable(self, exc: aiohttp.ClientError) -> NodeUnavailable:
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.os_error.strerror or str(exc.os_error)
            return NodeUnavailable(f"node unreachable: cannot connect to {self.where}: {reason}")
        if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return NodeUnavailable(f"node unreachable: {self.where} dropped the connection")
        return NodeUnavailable(f"node unreachable: {self.where}: {exc}")


def _count(line: Mapping[str, Any], key: str) -> int:
    """A non-negative count from a streamed report line (0 when absent or not a count)."""
    value = line.get(key, 0)
    return value if type(value) is int and value >= 0 else 0


def _name_of(entry: Mapping[str, Any]) -> str:
    name = entry.get("Name")
    return safe_text(name) if isinstance(name, str) else ""


def _kind_of(entry: Mapping[str, Any]) -> str:
    kind = entry.get("Type", "")
    return safe_text(kind) if isinstance(kind, str) else str(kind)
