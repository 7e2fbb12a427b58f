"""The store: pinsyncd's state in one SQLite file, fetched and saved, no rules.

- `db`: `StateStore`, the one writer's connection: the node's pinset, the remote requests,
  each service's bookkeeping, small facts;
- `schema`: the tables and their migrations, and how a row maps to a `RemotePin`;
- `scratch`: temporary tables for adoption and tracking, so memory stays flat;
- `listing`: what vetting the node's listing found;
- `errors`: a file that cannot be used, and damage set aside;
- `readonly`: the one read side that `status`, `/status` and `/metrics` show.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pinsyncd.store.db import StateStore
    from pinsyncd.store.errors import (
        StateDamaged,
        StateError,
        damaged,
        damaged_message,
        is_damage,
        set_aside,
        set_aside_damaged,
        sqlite_problem,
    )
    from pinsyncd.store.listing import ListingDigest, ListingVetting, StoredListing
    from pinsyncd.store.schema import FAILED_FOR_GOOD_SQL, MIGRATIONS, SCHEMA_VERSION

_WHERE = {
    "StateStore": "db",
    "ListingVetting": "listing",
    "StoredListing": "listing",
    "ListingDigest": "listing",
    **dict.fromkeys(("FAILED_FOR_GOOD_SQL", "MIGRATIONS", "SCHEMA_VERSION"), "schema"),
    **dict.fromkeys(
        (
            "StateDamaged",
            "StateError",
            "damaged",
            "damaged_message",
            "is_damage",
            "set_aside",
            "set_aside_damaged",
            "sqlite_problem",
        ),
        "errors",
    ),
}


def __getattr__(name: str) -> Any:
    """Each name is imported when first used, so a command that only reads the state file
    (`status`) does not pay for the writer's imports at start-up."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "FAILED_FOR_GOOD_SQL",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ListingDigest",
    "ListingVetting",
    "StateDamaged",
    "StateError",
    "StateStore",
    "StoredListing",
    "damaged",
    "damaged_message",
    "is_damage",
    "set_aside",
    "set_aside_damaged",
    "sqlite_problem",
]
