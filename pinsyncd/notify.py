"""systemd's service notification protocol (sd_notify), without a dependency: datagrams such
as `READY=1`, `STATUS=...`, `WATCHDOG=1`, `RELOADING=1` and `STOPPING=1` sent to the
AF_UNIX socket named by `$NOTIFY_SOCKET`. Outside systemd (no `$NOTIFY_SOCKET`) every call
does nothing; a failed send is never an error for the daemon."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("pinsyncd.notify")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        self._address = address or None
        self.watchdog_interval = _watchdog_interval(env)
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None when not asked."""

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> bool:
        if self._address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:
            log.debug("sd_notify failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={_one_line(status)}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={_one_line(status)}")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading config")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.05, int(usec) / 1_000_000 / 2)
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]
