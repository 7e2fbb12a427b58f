"""Files shipped with the package: the commented example config, and the systemd units in
`systemd/` (the daemon's `pinsyncd.service`; `pinsyncd-sync.service` and its timer)."""

from __future__ import annotations

from importlib.resources import files


def example_config() -> str:
    """The example config, every key commented (`config.example.yaml` in the source tree)."""
    return (files(__package__) / "config.example.yaml").read_text(encoding="utf-8")
