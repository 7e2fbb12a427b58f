"""What the user's Kubo node already knows, for `pinsyncd init` and `import-kubo`: where its
RPC API listens, the secret it asks for (API.Authorizations), and the pinning services added
to it (`ipfs pin remote service add`, or IPFS Desktop's Settings → Pinning Services) with
their keys and whether Kubo's own MFS policy is on for each.

The repo's `config` file has everything when this user can read it. Over the RPC, Kubo tells
the services' names, endpoints and policies but never their keys (it conceals them on
purpose), so without the file the keys are left for the user to fill in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinsyncd.files import NotARegularFile, read_capped
from pinsyncd.tokens import Secret

MAX_KUBO_CONFIG = 4 * 2**20
DEFAULT_API = "/ip4/127.0.0.1/tcp/5001"


@dataclass(frozen=True)
class KuboService:
    name: str  # Kubo's nickname for it
    endpoint: str
    key: Secret | None  # None when the repo's config could not be read
    mfs_policy: bool  # Kubo itself pins the MFS root there


@dataclass
class KuboFindings:
    """What was found; `notes` says, in words for the user, what could not be found."""

    repo: Path
    api: str = DEFAULT_API  # as Kubo writes it (a multiaddr) or a URL
    api_from: str = "the default"
    rpc_auth_on: bool = False  # API.Authorizations has entries: the RPC asks for a secret
    rpc_secret: Secret | None = None  # one that allows all of /api/v0
    config_read: bool = False
    services: list[KuboService] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def repo_path(env: Mapping[str, str]) -> Path:
    """`$IPFS_PATH`, else `~/.ipfs`, as Kubo's own commands find it."""
    if env.get("IPFS_PATH"):
        return Path(env["IPFS_PATH"]).expanduser()
    return Path(env.get("HOME") or Path.home()) / ".ipfs"


def read_repo(repo: Path) -> KuboFindings:
    """Everything the repo's files tell (no RPC): `api` (written while the daemon runs), and
    `config` when this user can read it."""
    found = KuboFindings(repo)
    config = _read_config(repo / "config", found)
    api = _read_api_file(repo / "api")
    if api is not None:
        found.api, found.api_from = api, str(repo / "api")
    elif config is not None and (configured := _configured_api(config)) is not None:
        found.api, found.api_from = configured, f"Addresses.API in {repo / 'config'}"
    if config is None:
        return found
    _read_authorizations(config, found)
    _read_services(config, found)
    return found


def _read_api_file(path: Path) -> str | None:
    try:
        text = read_capped(path, 4096).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def _read_config(path: Path, found: KuboFindings) -> dict[str, Any] | None:
    try:
        data = json.loads(read_capped(path, MAX_KUBO_CONFIG))
    except FileNotFoundError:
        found.notes.append(f"no Kubo repo at {path.parent} (set IPFS_PATH, or --ipfs-path)")
        return None
    except PermissionError:
        found.notes.append(
            f"{path} is not readable by this user: the services' keys cannot be read "
            "(Kubo never gives them over its RPC)"
        )
        return None
    except (NotARegularFile, OSError, UnicodeDecodeError, ValueError) as exc:
        found.notes.append(f"{path} cannot be read as Kubo's config: {exc}")
        return None
    if not isinstance(data, dict):
        found.notes.append(f"{path} is not a Kubo config (not a JSON object)")
        return None
    found.config_read = True
    return data


def _configured_api(config: Mapping[str, Any]) -> str | None:
    addresses = _dict(config.get("Addresses")).get("API")
    if isinstance(addresses, list):
        addresses = next((a for a in addresses if isinstance(a, str)), None)
    return addresses if isinstance(addresses, str) and addresses else None


def _read_authorizations(config: Mapping[str, Any], found: KuboFindings) -> None:
    scopes = _dict(_dict(config.get("API")).get("Authorizations"))
    found.rpc_auth_on = bool(scopes)
    for name, scope in sorted(scopes.items()):
        scope = _dict(scope)
        secret, paths = scope.get("AuthSecret"), scope.get("AllowedPaths")
        if not isinstance(secret, str) or not secret or not isinstance(paths, list):
            continue
        if any(isinstance(p, str) and _covers_rpc(p) for p in paths):
            found.rpc_secret = Secret(secret, f"API.Authorizations.{name} in Kubo's config")
            return
    if scopes:
        found.notes.append(
            "Kubo's RPC asks for a secret (API.Authorizations), but none of its entries allows "
            "all of /api/v0; add one, or give pinsyncd a secret in node.token_file"
        )


def _covers_rpc(allowed: str) -> bool:
    """Whether an AllowedPaths prefix lets through every /api/v0 call pinsyncd makes."""
    return "/api/v0".startswith(allowed.rstrip("/")) or allowed == "/"


def _read_services(config: Mapping[str, Any], found: KuboFindings) -> None:
    services = _dict(_dict(config.get("Pinning")).get("RemoteServices"))
    for name, entry in sorted(services.items()):
        api = _dict(_dict(entry).get("API"))
        endpoint, key = api.get("Endpoint"), api.get("Key")
        if not isinstance(endpoint, str) or not endpoint:
            found.notes.append(f"Kubo's service {name!r} has no endpoint: left out")
            continue
        mfs = _dict(_dict(_dict(entry).get("Policies")).get("MFS")).get("Enable") is True
        secret = Secret(key, f"Kubo's service {name}") if isinstance(key, str) and key else None
        found.services.append(KuboService(name, endpoint, secret, mfs))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
