"""The rules of `pinsyncd.outcomes` (what the end of a cycle means for a service's health) and
the one "failed for good" rule, property-tested: they are what the real cycle calls
(`sync.service.ServiceExecutor` hands every cycle's end to `health_after`)."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinsyncd.model import RemoteStatus, ServiceState, failed_for_good
from pinsyncd.outcomes import (
    LONG_PAUSE,
    RETRY_AFTER,
    CycleEnd,
    Health,
    Hold,
    Trouble,
    health_after,
    hold_of,
    is_user_pause,
)
from pinsyncd.store import FAILED_FOR_GOOD_SQL, MIGRATIONS, SCHEMA_VERSION
from pinsyncd.store.readonly import read_status

NOW = 1_800_000_000.0
RECHECK = 60.0
waits = st.floats(min_value=0.001, max_value=7 * 86400, allow_nan=False)


def backoff(failures: int) -> float:
    return min(3600.0, 2.0 ** (failures - 1))


states = st.builds(
    ServiceState,
    name=st.just("svc"),
    paused_until=st.sampled_from([0.0, NOW - 10, NOW + 10]),
    pause_reason=st.sampled_from(
        [None, "paused: the token was refused", RETRY_AFTER, "backing off: 1 failed cycle(s)"]
    ),
    failures=st.integers(0, 20),
    down_since=st.sampled_from([0.0, NOW - 3600, NOW - 1]),
)
ends = st.one_of(
    st.builds(CycleEnd, trouble=st.just(Trouble.NONE), blocked_for=st.sampled_from([0.0, 5.0])),
    st.builds(CycleEnd, trouble=st.just(Trouble.STOPPING)),
    st.builds(
        CycleEnd, trouble=st.just(Trouble.REFUSED), error=st.just("401"), refusal=st.just("t")
    ),
    st.builds(
        CycleEnd,
        trouble=st.just(Trouble.RATE_LIMITED),
        error=st.just("429"),
        retry_after=st.none() | waits,
    ),
    st.builds(CycleEnd, trouble=st.just(Trouble.FAILING), error=st.just("HTTP 503")),
)


def after(state: ServiceState, end: CycleEnd) -> Health | None:
    return health_after(state, end, now=NOW, recheck=RECHECK, backoff=backoff)


@given(states, ends)
def test_every_end_has_one_meaning(state: ServiceState, end: CycleEnd) -> None:
    health = after(state, end)
    if end.trouble is Trouble.STOPPING:
        assert health is None, "a stop says nothing about the service"
        return
    assert health is not None
    assert health.paused_until == (NOW + health.wait if health.wait else 0.0)
    assert health.down_since <= NOW
    assert health.needs_user is (end.trouble is Trouble.REFUSED)
    changed = end.trouble is not Trouble.NONE and _kind(state) != _kind_of(health.pause_reason)
    assert health.announce is (changed or health.wait >= LONG_PAUSE), "said when it starts"
    if end.trouble is Trouble.NONE:
        assert (health.failures, health.down_since, health.last_error) == (0, 0.0, None)
        assert health.wait == end.blocked_for, "a Retry-After still running outlives the cycle"
        assert health.pause_reason == (RETRY_AFTER if end.blocked_for else None)
    elif end.trouble is Trouble.REFUSED:
        assert (health.wait, health.failures) == (RECHECK, state.failures)
        assert health.down_since == (state.down_since or NOW), "down (for failover) at once"
        assert is_user_pause(health.pause_reason)
    elif end.trouble is Trouble.RATE_LIMITED:
        expected = end.retry_after if end.retry_after is not None else RECHECK
        assert health.wait == expected
        assert (health.failures, health.down_since) == (state.failures, state.down_since)
    else:
        assert health.failures == state.failures + 1
        assert health.wait == backoff(state.failures + 1)
        assert health.down_since == (state.down_since or NOW)
    assert health.applied_to(state).paused_until == health.paused_until


HOLDS = {
    Trouble.REFUSED: Hold.PAUSED,
    Trouble.RATE_LIMITED: Hold.RATE_LIMITED,
    Trouble.FAILING: Hold.BACKOFF,
}


@given(states, ends)
def test_what_holds_a_service_back_is_one_cause_read_off_its_reason(
    state: ServiceState, end: CycleEnd
) -> None:
    """`/metrics` shows one gauge per cause (`hold_of`): the reason each end saves names
    the right one, and only a cycle that went through is a success."""
    health = after(state, end)
    if health is None:
        return
    assert health.went_through is (end.trouble is Trouble.NONE)
    hold = hold_of(health.pause_reason)
    if end.trouble is Trouble.NONE:
        assert hold is (Hold.RATE_LIMITED if end.blocked_for else Hold.NONE)
    else:
        assert hold is HOLDS[end.trouble]
    assert (hold is Hold.PAUSED) is health.needs_user


def _kind(state: ServiceState) -> str:
    return _kind_of(state.pause_reason)


def _kind_of(reason: str | None) -> str:
    return (reason or "").split(":")[0]


@given(st.lists(ends, max_size=12))
def test_a_run_of_cycles_ends_clear_once_one_goes_through(run: list[CycleEnd]) -> None:
    """Whatever came before, a cycle that goes through (with no Retry-After running) leaves
    the service up, unpaused, with no failures counted; and failures count only failed
    cycles in a row."""
    state = ServiceState("svc")
    in_a_row = 0
    for end in [*run, CycleEnd(Trouble.NONE)]:
        health = after(state, end)
        if health is None:
            continue
        state = health.applied_to(state)
        if end.trouble is Trouble.FAILING:
            in_a_row += 1
        elif end.trouble is Trouble.NONE:
            in_a_row = 0
        assert state.failures == in_a_row
    assert (state.paused_until, state.pause_reason, state.failures, state.down_since) == (
        0.0,
        None,
        0,
        0.0,
    )


rows = st.lists(
    st.tuples(st.sampled_from(list(RemoteStatus)), st.integers(0, 6)), min_size=1, max_size=30
)


@settings(max_examples=60, deadline=None)
@given(rows, st.integers(1, 5))
def test_failed_for_good_is_one_rule_in_the_model_the_sql_and_status(
    tmp_path_factory: pytest.TempPathFactory,
    pins: list[tuple[RemoteStatus, int]],
    max_attempts: int,
) -> None:
    """The model's rule, the SQL filter the failover and `status` use, and the count `status`
    shows agree on every row."""
    path = tmp_path_factory.mktemp("ffg") / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for script in MIGRATIONS:
            for statement in (s for s in script.split(";") if s.strip()):
                db.execute(statement)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        for i, (status, attempts) in enumerate(pins):
            db.execute(
                "INSERT INTO remote_pins (service, cid, status, requestid, updated, attempts) "
                "VALUES ('svc', ?, ?, ?, 1.0, ?)",
                (f"cid{i}", status.value, f"r{i}", attempts),
            )
        (by_sql,) = db.execute(
            f"SELECT COUNT(*) FROM remote_pins WHERE {FAILED_FOR_GOOD_SQL}", (max_attempts,)
        ).fetchone()
    finally:
        db.close()
    by_model = sum(failed_for_good(s, a, max_attempts) for s, a in pins)
    assert by_sql == by_model
    shown = read_status(path, ["svc"], max_attempts=max_attempts)["services"]["svc"]
    assert shown["failed_for_good"] == by_model
