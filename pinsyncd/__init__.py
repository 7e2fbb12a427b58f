"""pinsyncd: keeps a local IPFS node's pins backed up on remote pinning services."""

# First: a SIGHUP that comes while `pinsyncd run` starts is remembered, not fatal.
from pinsyncd import hangup  # noqa: F401, I001

from functools import cache


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pinsyncd")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    """`__version__`, read from the installed metadata when first asked for (it costs a
    tenth of `pinsyncd status`'s start-up)."""
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
