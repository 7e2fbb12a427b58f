"""The `http.listen` address: "HOST:PORT", read by the config and by the HTTP server alike."""

from __future__ import annotations

import ipaddress


def parse_listen(listen: str) -> tuple[str, int]:
    """ "HOST:PORT" (IPv6 as "[::1]:9123"; port 0 picks a free one) as (host, port)."""
    host, sep, port_text = listen.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{listen!r}: write an IPv6 address in brackets, as [::1]:9123")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT (as 127.0.0.1:9123)")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
