"""A throwaway Kubo node for a restore drill: a fresh, empty repo in a temporary directory,
started online with the user's own `ipfs` binary, that can reach only the peers it is told
to dial. It is always stopped and its repo deleted, on errors and on Ctrl-C too.

The repo is made with `ipfs init --profile test --empty-repo`: its API, gateway and swarm
listen on 127.0.0.1 on ports the kernel picks, with no bootstrap peers and no MDNS; and
`Routing.Type none` leaves it without a DHT. So it knows no peer but those it dials.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pinsyncd.kubo import LocalNode, NodeError

BINARY_ENV = "PINSYNCD_IPFS_BINARY"
REPO_PREFIX = "pinsyncd-drill-"
PID_FILE = "pinsyncd-daemon.pid"
"""In the repo: the throwaway daemon's pid, so a later drill can tell a leftover repo."""
BASE_CONFIG: dict[str, Any] = {"Routing.Type": "none"}
"""Set in every throwaway repo, beside what `--profile test` sets."""
START_TIMEOUT = 60.0
STOP_GRACE = 10.0
_API = re.compile(r"/ip4/([0-9.]+)/tcp/(\d+)|/ip6/([0-9a-fA-F:]+)/tcp/(\d+)")
_LOG_TAIL = 600


class ThrowawayError(Exception):
    """The throwaway node could not be made or started; the message says why, in one line."""


def find_binary(given: str | None, env: Mapping[str, str] | None = None) -> str:
    """The `ipfs` binary to run: `given`, else `$PINSYNCD_IPFS_BINARY`, else `ipfs` on PATH.
    Raises `ThrowawayError` when it is not there or cannot be run."""
    env = os.environ if env is None else env
    wanted = given or env.get(BINARY_ENV) or "ipfs"
    found = shutil.which(wanted, path=env.get("PATH", os.defpath))
    if found is None:
        how = "--ipfs-binary PATH" if given is None else "another --ipfs-binary"
        where = "is not on PATH" if os.sep not in wanted else "is not an executable file"
        raise ThrowawayError(
            f"the ipfs binary {wanted!r} {where}; install Kubo or give {how} (or set ${BINARY_ENV})"
        )
    return found


class ThrowawayNode:
    """`async with ThrowawayNode(binary, config={...}) as node:` then `node.api_url`. The
    constructor does no I/O; `close()` may be called twice. `config` holds extra settings
    (dotted Kubo config keys to JSON values, as `ipfs config --json` takes them), applied
    after `BASE_CONFIG`."""

    def __init__(
        self,
        binary: str,
        *,
        config: Mapping[str, Any] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.binary = binary
        self.config = {**BASE_CONFIG, **(config or {})}
        self.start_timeout = start_timeout
        self.repo: Path | None = None
        self.api_url = ""
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def log_path(self) -> Path:
        assert self.repo is not None
        return self.repo / "daemon.log"

    async def start(self) -> None:
        remove_leftovers()
        try:
            self.repo = Path(tempfile.mkdtemp(prefix=REPO_PREFIX))
            env = {**os.environ, "IPFS_PATH": str(self.repo)}
            await self._run("init", "--profile", "test", "--empty-repo", env=env)
            self._configure(self.repo / "config")
            with open(self.log_path, "wb") as log:  # noqa: ASYNC230 - a new local file
                self._process = await asyncio.create_subprocess_exec(
                    self.binary,
                    "daemon",
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    preexec_fn=_die_with_parent,
                )
            (self.repo / PID_FILE).write_text(str(self._process.pid), encoding="ascii")
        except (OSError, ValueError) as exc:  # no room in $TMPDIR, a config that is not JSON
            raise ThrowawayError(f"cannot make a throwaway ipfs node: {exc}") from None
        self.api_url = await self._wait_for_api()

    async def close(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after `STOP_GRACE`) and delete the repo.
        Cancelled while it waits (a second Ctrl-C), it kills the daemon at once."""
        process, self._process = self._process, None
        try:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), STOP_GRACE)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        except BaseException:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            raise
        finally:
            repo, self.repo = self.repo, None
            if repo is not None:
                shutil.rmtree(repo, ignore_errors=True)

    # --- plumbing ---------------------------------------------------------------------------

    async def _run(self, *args: str, env: dict[str, str]) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                self.binary,
                *args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise ThrowawayError(f"cannot run {self.binary}: {exc.strerror or exc}") from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.start_timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ThrowawayError(
                f"`ipfs {args[0]}` did not finish within {self.start_timeout:g}s"
            ) from None
        if process.returncode != 0:
            raise ThrowawayError(
                f"`ipfs {args[0]}` failed: {_tail(output.decode('utf-8', 'replace'))}"
            )

    def _configure(self, path: Path) -> None:
        config = json.loads(path.read_text(encoding="utf-8"))
        for key, value in self.config.items():
            *parents, last = key.split(".")
            section = config
            for part in parents:
                section = section.setdefault(part, {})
                if not isinstance(section, dict):
                    raise ThrowawayError(f"Kubo config key {key!r}: {part} is not a section")
            section[last] = value
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")

    async def _wait_for_api(self) -> str:
        """The daemon's RPC URL, once `$IPFS_PATH/api` names it and it answers."""
        assert self.repo is not None and self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        api_file = self.repo / "api"
        while loop.time() < deadline:
            if self._process.returncode is not None:
                raise ThrowawayError(f"the throwaway ipfs daemon exited: {self._log_tail()}")
            url = _api_url(api_file)
            if url is not None and await _answers(url):
                return url
            await asyncio.sleep(0.1)
        raise ThrowawayError(
            f"the throwaway ipfs daemon did not start within {self.start_timeout:g}s: "
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return _tail(self.log_path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return "(no log)"


def remove_leftovers(parent: Path | None = None) -> list[Path]:
    """Delete the repos of throwaway nodes whose pinsyncd was killed (`kill -9`, a power
    cut) before it could: those whose daemon is no longer running. The daemon itself dies
    with its pinsyncd (`_die_with_parent`, on Linux). The repos deleted."""
    parent = parent or Path(tempfile.gettempdir())
    removed = []
    for repo in parent.glob(f"{REPO_PREFIX}*"):
        try:
            pid = int((repo / PID_FILE).read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue  # being made right now, or not ours
        if not _running(pid):
            shutil.rmtree(repo, ignore_errors=True)
            removed.append(repo)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process has that pid now
        return True
    return True


def _die_with_parent() -> None:
    """In the child, before `ipfs daemon` runs: ask Linux to send it SIGTERM when pinsyncd
    dies, however it dies, so no throwaway daemon outlives a killed drill."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _api_url(api_file: Path) -> str | None:
    try:
        text = api_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    match = _API.fullmatch(text)
    if match is None:
        return None
    if match.group(1):
        return f"http://{match.group(1)}:{match.group(2)}"
    return f"http://[{match.group(3)}]:{match.group(4)}"


async def _answers(url: str) -> bool:
    try:
        async with LocalNode(url, timeout=5.0) as node:
            await node.version()
    except NodeError:
        return False
    return True


def _tail(text: str) -> str:
    """The end of a program's output, on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _LOG_TAIL else "…" + flat[-_LOG_TAIL:]
