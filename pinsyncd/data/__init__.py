"""Files shipped with the package: the commented example config."""

from __future__ import annotations

from importlib.resources import files


def example_config() -> str:
    """The example config, every key commented (`config.example.yaml` in the source tree)."""
    return (files(__package__) / "config.example.yaml").read_text(encoding="utf-8")
