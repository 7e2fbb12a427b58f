"""What the daemon's HTTP endpoint and `pinsyncd serve` both show an operator, made in one
place: a Prometheus registry of its own with the build and the process (CPU, memory, file
descriptors, Python's GC), and the answer of `/healthz`.

No `_created` series: prometheus_client's switch for them is process-wide, and pinsyncd
turns it off (Prometheus ignores them in the text format; they only double the series)."""

from __future__ import annotations

import platform

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

import pinsyncd
from pinsyncd.logs import redact_text


def process_registry() -> CollectorRegistry:
    """A new registry holding `pinsyncd_build_info` and the process and GC metrics."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    Info("pinsyncd_build", "The running pinsyncd.", registry=registry).info(
        {"version": pinsyncd.__version__, "python": platform.python_version()}
    )
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def health_response(healthy: bool, reason: str) -> web.Response:
    """`/healthz`: 200 "ok", or 503 with the reason (any token in it redacted)."""
    if healthy:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"{redact_text(reason)}\n")
