"""Who may use `pinsyncd serve`: the accounts of `serve.users`, each with its bearer token,
and the node's own addresses that every answer offers as `delegates`."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from pinsyncd.config.schema import ServeAccount
from pinsyncd.kubo import NodeIdentity
from pinsyncd.listen import is_loopback
from pinsyncd.origins import is_public, select_origins
from pinsyncd.tokens import TokenError

MAX_DELEGATES = 20


@dataclass(frozen=True)
class Account:
    name: str
    max_pins: int | None


class Accounts:
    """The accounts by token, read from the config's sources (files or variables) when
    made: a new `Accounts` is how users and tokens are reloaded."""

    def __init__(self, accounts: Iterable[ServeAccount]) -> None:
        self._by_token: list[tuple[bytes, Account]] = []
        for account in accounts:
            secret = account.token.reveal()  # TokenError when it cannot be read
            self._by_token.append((secret.encode(), Account(account.name, account.max_pins)))
        if not self._by_token:
            raise TokenError("serve.users lists no account")

    @property
    def names(self) -> list[str]:
        return [account.name for _, account in self._by_token]

    def find(self, authorization: str | None) -> Account | str:
        """The account of an `Authorization: Bearer <token>` header; else why not ("missing"
        or "invalid"). Every token is compared, in constant time, whichever matches."""
        if not authorization:
            return "missing"
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "invalid"
        given = token.strip().encode()
        found: Account | None = None  # every secret is compared, whichever matches
        for secret, account in self._by_token:
            if hmac.compare_digest(secret, given):
                found = account
        return found if found is not None else "invalid"


def delegates_of(identity: NodeIdentity) -> list[str]:
    """The node's addresses to give as `delegates`: public ones first, then those of local
    networks; loopback only when there is nothing else (a node on a test machine)."""
    every = select_origins(identity.addresses, identity.peer_id, include_private=True)
    public = [a for a in every if is_public(a)]
    local = [a for a in every if not is_public(a) and not _loopback(a)]
    chosen = public + local or every
    return chosen[:MAX_DELEGATES]


def _loopback(address: str) -> bool:
    parts = address.split("/")  # /ip4/HOST/..., /dns/HOST/...
    return len(parts) > 2 and is_loopback(parts[2])
