"""pinsyncd: keeps a local IPFS node's pins backed up on remote pinning services."""

# First: a SIGHUP that comes while `pinsyncd run` starts is remembered, not fatal.
from pinsyncd import hangup  # noqa: F401, I001

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pinsyncd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
