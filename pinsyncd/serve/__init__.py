"""`pinsyncd serve`: this node as a pinning service for your other devices, speaking the IPFS
Pinning Service API v1.0.0, with Kubo at `node.api` doing the pinning.

`wire` checks what comes in and shapes what goes out, `store` keeps every request (SQLite),
`pinner` has Kubo pin and unpin, `accounts` knows the tokens and the delegates, `app` is
the HTTP side, `metrics` the Prometheus side, and `run` the process around them."""
