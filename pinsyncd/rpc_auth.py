"""Kubo's RPC authorization (`API.Authorizations` in its config): the secret, written as Kubo
writes it (`bearer:TOKEN`, `basic:USER:PASSWORD`, `basic:BASE64`, or a bare token), turned into
the `Authorization` header Kubo compares it with. The same rules as Kubo's own
`ConvertAuthSecret`, except that an unknown type is an error here rather than no header."""

from __future__ import annotations

import base64


class RpcAuthError(ValueError):
    """A secret Kubo would not accept."""


def authorization_header(secret: str) -> str:
    kind, colon, value = secret.partition(":")
    if not colon:
        return f"Bearer {secret}"  # no type: a bearer token, as Kubo assumes
    if kind == "bearer":
        return f"Bearer {value}"
    if kind == "basic":
        if ":" in value:  # user:password
            return "Basic " + base64.b64encode(value.encode("utf-8")).decode("ascii")
        return f"Basic {value}"  # already base64
    raise RpcAuthError(  # the part before the colon may be part of the secret: not shown
        "the secret has a type before its ':' that Kubo does not know: write bearer:TOKEN or "
        "basic:USER:PASSWORD, as in Kubo's API.Authorizations"
    )
