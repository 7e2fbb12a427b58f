"""Small helpers for tests that talk to a pinning service or a hand-written server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from pinsyncd.psa import PinningServiceClient
from pinsyncd.tokens import Secret
from tests.fake_psa import FakePinningService

SPEC_TOKEN = "spec-token-value"
"""The token of the `service` fixture's fake service (conftest)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def client_for(target: FakePinningService | str, **kwargs: float) -> PinningServiceClient:
    """A client for the `service` fixture, or for a server at a URL taking `SPEC_TOKEN`."""
    url = target if isinstance(target, str) else target.url
    return PinningServiceClient("spec", url, Secret(SPEC_TOKEN, "$SPEC_TOKEN"), **kwargs)


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """Serve one handler for every method and path on 127.0.0.1; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
