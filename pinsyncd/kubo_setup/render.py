"""The config `pinsyncd init` writes: the commented example config, with the node and the
services filled in from what Kubo knows. Pure text work, no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import yaml

from pinsyncd.config.schema import normalize_endpoint

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NODE_TOKEN_FILE = "tokens/kubo-rpc"


@dataclass(frozen=True)
class NewService:
    """One service as it goes into the config."""

    name: str
    endpoint: str
    token_file: str  # relative to the config's folder
    kubo_name: str  # Kubo's nickname for it


def service_name(kubo_name: str, taken: Iterable[str]) -> str:
    """A pinsyncd name for Kubo's nickname: its letters, digits, `.`, `_` and `-` (other
    characters become `-`), unique among `taken`."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", kubo_name).strip("-._")[:60] or "service"
    if not _NAME.fullmatch(base):
        base = f"s-{base}"[:60]
    used = set(taken)
    name, number = base, 2
    while name in used:
        name, number = f"{base}-{number}", number + 1
    return name


def same_endpoint(a: str, b: str) -> bool:
    """Whether two endpoints are the same service (as the config would write them)."""
    try:
        return normalize_endpoint(a) == normalize_endpoint(b)
    except ValueError:
        return a.rstrip("/") == b.rstrip("/")


def services_yaml(services: Sequence[NewService], *, indent: str = "  ") -> str:
    """The list entries for `services:`, one block each."""
    blocks = []
    for service in services:
        lines = [
            f"{indent}- name: {_scalar(service.name)}",
            f"{indent}  endpoint: {_scalar(service.endpoint)}",
            f"{indent}  token_file: {_scalar(service.token_file)}",
        ]
        if service.kubo_name != service.name:
            lines.insert(0, f"{indent}# Kubo calls it {service.kubo_name!r}.")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"


def render_config(
    example: str,
    *,
    api: str,
    node_token: bool,
    services: Sequence[NewService],
    kubo_mfs: Sequence[str],
    origin: str,
) -> str:
    """`example` (the commented example config) with: `node.api`, `node.token_file` when
    Kubo's RPC asks for a secret, the default state path, and `services` (the example's
    entries kept below, commented out, for their explanations)."""
    text = _replace_line(example, "  api: ", f"  api: {_scalar(api)}")
    if node_token:
        text = _replace_line(text, "  # token_file: ", f"  token_file: {NODE_TOKEN_FILE}")
    # The default state path is right everywhere: $STATE_DIRECTORY under systemd, else the
    # user's XDG state folder.
    text = _replace_line(text, "  path: ", "  # path: /var/lib/pinsyncd/state.db")
    if kubo_mfs:
        names = ", ".join(kubo_mfs)
        note = (
            f"  # Kubo's own MFS policy already pins the MFS root to {names}: leave this off,\n"
            "  # or the root is pinned twice on the same account.\n"
        )
        text = text.replace("  mfs: false\n", note + "  mfs: false\n", 1)
    head, marker, example_services = text.partition("\nservices:\n")
    if not marker:
        raise ValueError("the example config has no services: section")
    header = f"# Written by `pinsyncd init` from {origin}.\n"
    listed = services_yaml(services) if services else _NO_SERVICES
    commented = "".join(
        f"# {line}".rstrip() + "\n" for line in example_services.rstrip("\n").split("\n")
    )
    return (
        header
        + head
        + "\nservices:\n"
        + listed
        + "\n# Every key a service entry may have, as in the example config:\n"
        + commented
    )


_NO_SERVICES = (
    "  # Kubo knows no pinning service: add yours here (see the examples below), e.g.\n"
    "  # - name: pinata\n"
    "  #   endpoint: https://api.pinata.cloud/psa\n"
    "  #   token_file: tokens/pinata\n"
)


def _replace_line(text: str, prefix: str, new: str) -> str:
    """The first line that starts with `prefix`, replaced by `new`."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line.startswith(prefix):
            lines[index] = new
            return "\n".join(lines)
    raise ValueError(f"the example config has no line starting with {prefix.strip()!r}")


def _scalar(value: str) -> str:
    """A YAML scalar for a name, URL, path or multiaddr: plain when it reads back as the same
    string (not `on`, `123` or `null`), else double-quoted (JSON escaping is valid YAML)."""
    if re.fullmatch(r"[A-Za-z0-9/_.-][A-Za-z0-9/_.:@%~+=-]*", value):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)
