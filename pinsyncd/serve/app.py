"""The HTTP side of `pinsyncd serve`: the five operations of the IPFS Pinning Service API
v1.0.0 under `/pins`, each for the account whose bearer token came with it, and the
operator's `/healthz` and `/metrics` (no token; nothing in them names a pin).

Every error is the spec's `Failure` object: 400 for a request the spec does not allow, 401
for a missing or unknown token, 404 for a request id the account does not have, 409 when the
account's `max_pins` is reached, 413 for a body over 64 KiB, 503 while the node behind the
service has never been reached (a `PinStatus` must name delegates)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web

from pinsyncd.logs import redact_text
from pinsyncd.operator_http import health_response
from pinsyncd.serve import wire
from pinsyncd.serve.accounts import Account, Accounts
from pinsyncd.serve.pinner import Pinner
from pinsyncd.serve.store import QuotaReached, Request, ServeStore

log = structlog.get_logger("pinsyncd.serve")

MAX_BODY = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCOUNT = web.RequestKey("account", Account)


class ServeApp:
    """The routes, over a store, a pinner and the accounts (swapped whole on reload)."""

    def __init__(
        self,
        store: ServeStore,
        pinner: Pinner,
        accounts: Accounts,
        *,
        delegates: Callable[[], Sequence[str]],
        health: Callable[[], tuple[bool, str]],
        metrics: Callable[[], Awaitable[tuple[bytes, str]]],
        on_request: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.pinner = pinner
        self.accounts = accounts
        self._delegates = delegates
        self._health = health
        self._metrics = metrics
        self._on_request = on_request

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        app.router.add_get("/pins", self._list)
        app.router.add_post("/pins", self._add)
        app.router.add_get("/pins/{requestid}", self._get)
        app.router.add_post("/pins/{requestid}", self._replace)
        app.router.add_delete("/pins/{requestid}", self._delete)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        return app

    # --- middleware --------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        operation = _operation(request)
        status = 500
        try:
            if operation != "operator":
                request[ACCOUNT] = self._authorize(request)
            response = await handler(request)
            status = response.status
            return response
        except wire.Refusal as exc:
            status = exc.status
            return _failure(exc)
        except QuotaReached as exc:
            status = 409
            return _failure(
                wire.Refusal(409, "INSUFFICIENT_FUNDS", f"{exc} (serve.users: max_pins)")
            )
        except web.HTTPException as exc:  # aiohttp's own: no such route, method, a big body
            status = exc.status
            if exc.status == 413:
                reason, details = "PAYLOAD_TOO_LARGE", f"the body is over {MAX_BODY} bytes"
            else:
                reason, details = exc.reason.upper().replace(" ", "_"), exc.reason
            return _failure(wire.Refusal(exc.status, reason, details), headers=exc.headers)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.error("request failed", operation=operation, error=redact_text(repr(exc)))
            return _failure(
                wire.Refusal(500, "INTERNAL_SERVER_ERROR", "the service could not do that now")
            )
        finally:
            if self._on_request is not None:
                self._on_request(operation, status)

    def _authorize(self, request: web.Request) -> Account:
        found = self.accounts.find(request.headers.get("Authorization"))
        if isinstance(found, Account):
            return found
        log.info("refused a request", why=f"access token is {found}", peer=request.remote)
        raise wire.Refusal(401, "UNAUTHORIZED", f"access token is {found}")

    # --- the operations ----------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        query = wire.parse_query(request.query)
        count, found = await self.store.find(request[ACCOUNT].name, query)
        delegates = self._need_delegates()
        results = [self._status(r, delegates) for r in found]
        return web.json_response({"count": count, "results": results})

    async def _add(self, request: web.Request) -> web.Response:
        pin = wire.parse_pin(await request.read())
        delegates = self._need_delegates()
        account = request[ACCOUNT]
        stored = await self.store.add(account.name, pin, max_pins=account.max_pins)
        self.pinner.added(pin.key)
        log.debug("pin requested", account=account.name, cid=pin.cid, requestid=stored.requestid)
        return web.json_response(self._status(stored, delegates), status=202)

    async def _get(self, request: web.Request) -> web.Response:
        found = await self.store.get(request[ACCOUNT].name, request.match_info["requestid"])
        if found is None:
            raise _not_found()
        return web.json_response(self._status(found, self._need_delegates()))

    async def _replace(self, request: web.Request) -> web.Response:
        pin = wire.parse_pin(await request.read())
        delegates = self._need_delegates()
        account = request[ACCOUNT]
        new = await self.store.replace(
            account.name, request.match_info["requestid"], pin, max_pins=account.max_pins
        )
        if new is None:
            raise _not_found()
        self.pinner.added(pin.key)
        self.pinner.removed()
        return web.json_response(self._status(new, delegates), status=202)

    async def _delete(self, request: web.Request) -> web.Response:
        gone = await self.store.delete(request[ACCOUNT].name, request.match_info["requestid"])
        if gone is None:
            raise _not_found()
        self.pinner.removed()
        return web.Response(status=202)

    # --- the operator's ----------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return health_response(*self._health())

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        body, content_type = await self._metrics()
        return web.Response(body=body, headers={"Content-Type": content_type})

    # --- helpers -----------------------------------------------------------------------------

    def _need_delegates(self) -> Sequence[str]:
        delegates = self._delegates()
        if not delegates:
            raise _no_delegates()
        return delegates

    def _status(self, request: Request, delegates: Sequence[str]) -> dict[str, Any]:
        details = request.details
        if request.status == "pinning" and details is None:
            details = self.pinner.details(request.pin.key)
        elif request.status == "queued" and details is None:
            details = f"waiting its turn: {self.pinner.concurrency} CIDs are fetched at a time"
        return wire.pin_status(
            request.requestid, request.status, request.created_ms, request.pin, delegates, details
        )


def _not_found() -> wire.Refusal:  # a new one each time: a raised exception keeps its trace
    return wire.Refusal(404, "NOT_FOUND", "no pin request with this id on this account")


def _no_delegates() -> wire.Refusal:
    return wire.Refusal(
        503,
        "NODE_UNAVAILABLE",
        "no delegates to give: the IPFS node behind this service has not been reached yet, "
        "or has no swarm address (offline? serve.delegates names them)",
    )


def _failure(refusal: wire.Refusal, headers: Any = None) -> web.Response:
    extra = {k: v for k, v in (headers or {}).items() if k.lower() == "allow"}
    if refusal.status == 503:
        extra["Retry-After"] = "30"
    return web.json_response(
        wire.failure(refusal.reason, refusal.details), status=refusal.status, headers=extra
    )


def _operation(request: web.Request) -> str:
    """The operation's name, for metrics and logs: list, add, get, replace, delete."""
    path = request.path.rstrip("/")
    if path == "/pins":
        return {"GET": "list", "POST": "add"}.get(request.method, "other")
    if path.startswith("/pins/"):
        return {"GET": "get", "POST": "replace", "DELETE": "delete"}.get(request.method, "other")
    if path in ("/healthz", "/metrics"):
        return "operator"
    return "other"
