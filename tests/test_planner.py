"""Property tests for the pure planner: (local pinset, what we know of a service) -> the plan.

The CIDs are short made-up strings: the planner never parses them."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from pinsyncd.model import LIVE_STATUSES, Origin, RemotePin, RemoteStatus
from pinsyncd.planner import Add, Remove, Replace, ServicePlan, plan_service

SERVICE = "svc"
FAST = settings(max_examples=300, deadline=None)

# --- strategies -----------------------------------------------------------------------------

cids = st.sampled_from([f"c{i}" for i in range(16)])
names = st.sampled_from(["", "photo.jpg", "a name", "ünïcode"])
requestids = st.sampled_from([None, None, "r-1", "r-2", "0b5d3f"])
# Offsets from `now` (next_attempt) and from `now - intent_grace` (updated): the exact
# boundary, either side of it by a little, and far away.
offsets = st.one_of(
    st.sampled_from([0.0, -1.0, 1.0, -0.001, 0.001, -1e6, 1e6]),
    st.floats(min_value=-1e7, max_value=1e7, allow_nan=False),
)


@dataclass(frozen=True)
class Scenario:
    local: dict[str, str]
    remote: dict[str, RemotePin]
    now: float
    adopted: bool
    intent_grace: float
    gone: frozenset[str] = frozenset()
    surplus: frozenset[str] = frozenset()
    node_online: bool = True
    first: bool = True

    def plan(self) -> ServicePlan:
        return plan_service(
            SERVICE,
            self.local,
            self.remote,
            now=self.now,
            adopted=self.adopted,
            first=self.first,
            intent_grace=self.intent_grace,
            gone=self.gone,
            surplus=self.surplus,
            node_online=self.node_online,
        )


@st.composite
def remote_pin(draw: st.DrawFn, cid: str, now: float, grace: float) -> RemotePin:
    return RemotePin(
        service=SERVICE,
        cid=cid,
        status=draw(st.sampled_from(list(RemoteStatus))),
        requestid=draw(requestids),
        created=draw(st.sampled_from([None, "2024-01-01T00:00:00+00:00"])),
        name=draw(st.sampled_from([None, "", "remote name"])),
        origin=draw(st.sampled_from(list(Origin))),
        attempts=draw(st.sampled_from([0, 1, 7])),
        next_attempt=now + draw(offsets),
        updated=now - grace + draw(offsets),
        owned=draw(st.booleans()),
    )


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    adopted: st.SearchStrategy[bool] | None = None,
) -> Scenario:
    now = draw(
        st.one_of(
            st.integers(0, 2_000_000_000).map(float),
            st.floats(min_value=0, max_value=4e9, allow_nan=False),
        )
    )
    grace = draw(
        st.one_of(
            st.sampled_from([0.0, 1.0, 60.0, 120.0]),
            st.floats(min_value=0, max_value=1e5, allow_nan=False),
        )
    )
    local = draw(st.dictionaries(cids, names, max_size=10))
    remote_cids = draw(st.lists(cids, max_size=12, unique=True))  # local or not
    remote = {cid: draw(remote_pin(cid, now, grace)) for cid in remote_cids}
    return Scenario(
        local=local,
        remote=remote,
        now=now,
        adopted=draw(adopted if adopted is not None else st.sampled_from([True, True, False])),
        intent_grace=grace,
        # the policy's delete candidates: any CIDs, even local ones (local must still win)
        gone=frozenset(draw(st.lists(cids, max_size=6))),
        surplus=frozenset(draw(st.lists(cids, max_size=6))),
        node_online=draw(st.sampled_from([True, True, False])),
    )


def sent_cids(plan: ServicePlan) -> list[str]:
    return [a.cid for a in plan.add] + [r.cid for r in plan.replace]


# --- properties -----------------------------------------------------------------------------
# Drawing a scenario costs far more than planning it, so each drawn scenario is checked against
# several properties (each a `check_*` function, named after the rule it guards).


def check_never_sends_a_cid_with_a_live_request(s: Scenario, plan: ServicePlan) -> None:
    """Never plans a second add for a CID that has a live request."""
    for cid in sent_cids(plan):
        row = s.remote.get(cid)
        assert row is None or row.status not in LIVE_STATUSES, (cid, row)


def check_each_cid_at_most_once_and_only_local_ones_sent(s: Scenario, plan: ServicePlan) -> None:
    everything = [*sent_cids(plan), *plan.resolve]
    assert len(everything) == len(set(everything))
    assert set(sent_cids(plan)) <= set(s.local)
    assert plan.service == SERVICE


def check_adoption_gate(s: Scenario, plan: ServicePlan) -> None:
    if not s.adopted:
        assert plan.adopt is True
        assert plan.add == [] and plan.replace == []
    else:
        assert plan.adopt is False


def check_deterministic_and_inputs_untouched(s: Scenario, plan: ServicePlan) -> None:
    local_before = copy.deepcopy(s.local)
    remote_before = copy.deepcopy(s.remote)
    assert s.plan() == plan
    # a copy of the inputs gives the same plan (nothing depends on object identity)
    twin = Scenario(
        dict(local_before),
        dict(remote_before),
        s.now,
        s.adopted,
        s.intent_grace,
        frozenset(s.gone),
        frozenset(s.surplus),
        s.node_online,
        s.first,
    )
    assert twin.plan() == plan
    assert s.local == local_before and list(s.local) == list(local_before)
    assert s.remote == remote_before and list(s.remote) == list(remote_before)


def check_liveness(s: Scenario, plan: ServicePlan) -> None:
    """Adopted: every local pin without a live request is sent once due."""
    assert s.adopted
    adds = {a.cid: a.name for a in plan.add}
    replaces = {r.cid: r for r in plan.replace}
    assert len(adds) == len(plan.add) and len(replaces) == len(plan.replace)
    for cid, name in s.local.items():
        row = s.remote.get(cid)
        if row is None:
            assert adds.get(cid) == name, cid
            continue
        due = row.next_attempt <= s.now
        if row.status is RemoteStatus.ERROR or (
            row.status is RemoteStatus.FAILED and not (row.requestid and row.owned)
        ):
            # never reached the service, or no request of ours to replace (none left, or
            # another's that stays as it is): a request of our own when due
            assert (cid in adds) == due, row
            if due:
                assert adds[cid] == name
            assert cid not in replaces
        elif row.status is RemoteStatus.FAILED:
            # a replace waits while the node (usually the only provider) is offline
            assert (cid in replaces) == (due and s.node_online), row
            if due and s.node_online:
                assert replaces[cid] == Replace(cid, row.requestid, name)
            assert cid not in adds
        else:
            assert row.status in LIVE_STATUSES
            assert cid not in adds and cid not in replaces


def check_waiting(s: Scenario, plan: ServicePlan) -> None:
    """`waiting` = intents within the grace + (once adopted) local retries not yet due."""
    young_intents = sum(
        1
        for row in s.remote.values()
        if row.status is RemoteStatus.INTENT and s.now - row.updated < s.intent_grace
    )
    retries_not_due = sum(
        1
        for cid in s.local
        if (row := s.remote.get(cid)) is not None
        and row.status in (RemoteStatus.ERROR, RemoteStatus.FAILED)
        and (
            row.next_attempt > s.now
            or (
                row.status is RemoteStatus.FAILED
                and row.requestid
                and row.owned
                and not s.node_online
            )
        )
    )
    assert plan.waiting == young_intents + (retries_not_due if s.adopted else 0)


def check_intents_resolved_after_the_grace_never_sent(s: Scenario, plan: ServicePlan) -> None:
    intents = {cid: row for cid, row in s.remote.items() if row.status is RemoteStatus.INTENT}
    expected = [cid for cid, row in intents.items() if s.now - row.updated >= s.intent_grace]
    assert plan.resolve == expected  # local or not, in the remote mapping's order
    assert not set(intents) & set(sent_cids(plan))


def check_deletes_only_known_requests_the_policy_gave_up(s: Scenario, plan: ServicePlan) -> None:
    """A delete names a request pinsyncd recorded (never an intent, whose request is not
    known), for a CID that is not wanted here and that the policy marked; so never another
    tool's pin, and never a pin that is still wanted."""
    removed = [r.cid for r in plan.remove]
    assert len(removed) == len(set(removed))
    for item in plan.remove:
        row = s.remote[item.cid]
        assert item.cid not in s.local
        assert item.cid in s.gone | s.surplus
        assert row.requestid and item.requestid == row.requestid
        assert row.owned, "only this device's own requests are ever deleted"
        assert row.status not in (RemoteStatus.INTENT, RemoteStatus.ERROR)
        assert item.reason == ("unpinned locally" if item.cid in s.gone else "extra copy")
    for cid in plan.drop:
        assert cid not in s.local and s.remote[cid].status is RemoteStatus.ERROR
    assert not set(removed) & set(plan.drop)
    assert not set(removed) & set(sent_cids(plan))
    if not s.adopted:
        assert plan.remove == [] and plan.drop == []


def check_replaces_only_owned_requests(s: Scenario, plan: ServicePlan) -> None:
    """A replace deletes the request it replaces: only ever one of this device's own."""
    for item in plan.replace:
        replaced = s.remote[item.supersedes or item.cid]
        assert replaced.requestid == item.requestid and replaced.owned, item


@FAST
@given(scenarios())
def test_safety_rules_hold_for_any_input(s: Scenario) -> None:
    plan = s.plan()
    check_deletes_only_known_requests_the_policy_gave_up(s, plan)
    check_replaces_only_owned_requests(s, plan)
    check_never_sends_a_cid_with_a_live_request(s, plan)
    check_each_cid_at_most_once_and_only_local_ones_sent(s, plan)
    check_adoption_gate(s, plan)
    check_deterministic_and_inputs_untouched(s, plan)


@FAST
@given(scenarios(adopted=st.sampled_from([True, True, True, False])))
def test_liveness_intents_and_waiting(s: Scenario) -> None:
    plan = s.plan()
    if s.adopted:
        check_liveness(s, plan)
    check_waiting(s, plan)
    check_intents_resolved_after_the_grace_never_sent(s, plan)
    check_never_sends_a_cid_with_a_live_request(s, plan)


@FAST
@given(scenarios(adopted=st.just(True)))
def test_a_later_window_decides_only_what_to_send_for_its_pins(s: Scenario) -> None:
    """A cycle plans a window of pins at a time (`sync.service`, and `sync --dry-run` the
    same way). What concerns the service's rows (intents to look up, deletes, errored adds
    to forget) is decided in the first window alone, so each is carried out once a cycle;
    a later window plans the same adds and replaces for its pins as a first one would."""
    first = s.plan()
    later = plan_service(
        SERVICE,
        s.local,
        s.remote,
        now=s.now,
        adopted=True,
        first=False,
        intent_grace=s.intent_grace,
        gone=s.gone,
        surplus=s.surplus,
        node_online=s.node_online,
    )
    assert (later.resolve, later.remove, later.drop) == ([], [], [])
    assert (later.add, later.replace) == (first.add, first.replace)
    intents_waiting = sum(
        1
        for row in s.remote.values()
        if row.status is RemoteStatus.INTENT and s.now - row.updated < s.intent_grace
    )
    assert later.waiting == first.waiting - intents_waiting


# --- examples documenting the rules ---------------------------------------------------------

NOW = 1_700_000_000.0


def row(cid: str, status: RemoteStatus, **fields: object) -> RemotePin:
    return RemotePin(SERVICE, cid, status, **fields)  # type: ignore[arg-type]


def plan_for(
    local: dict[str, str],
    rows: list[RemotePin],
    *,
    adopted: bool = True,
    grace: float = 60.0,
) -> ServicePlan:
    return plan_service(
        SERVICE,
        local,
        {r.cid: r for r in rows},
        now=NOW,
        adopted=adopted,
        intent_grace=grace,
    )


def test_new_local_pins_are_added_with_their_names() -> None:
    plan = plan_for({"a": "photo.jpg", "b": ""}, [])
    assert plan.add == [Add("a", "photo.jpg"), Add("b", "")]
    assert plan.replace == [] and plan.resolve == []
    assert plan.waiting == 0


def test_a_failed_request_for_a_cid_no_longer_local_is_not_replaced() -> None:
    """The data is gone from the node: re-pinning it would fail again, so leave it."""
    plan = plan_for({}, [row("gone", RemoteStatus.FAILED, requestid="r1", next_attempt=0.0)])
    assert plan.replace == [] and plan.add == []
    assert plan.waiting == 0


def test_an_error_row_for_a_cid_no_longer_local_is_not_added() -> None:
    plan = plan_for({}, [row("gone", RemoteStatus.ERROR, next_attempt=0.0)])
    assert plan.add == [] and plan.waiting == 0


def test_a_due_failed_request_is_replaced_in_place() -> None:
    plan = plan_for({"a": "n"}, [row("a", RemoteStatus.FAILED, requestid="r1", next_attempt=NOW)])
    assert plan.replace == [Replace("a", "r1", "n")]
    assert plan.add == []


def test_a_failed_row_without_a_requestid_is_added_afresh() -> None:
    """A replace whose failed request had vanished (404) leaves no requestid: add again."""
    plan = plan_for({"a": "n"}, [row("a", RemoteStatus.FAILED, next_attempt=NOW - 1)])
    assert plan.add == [Add("a", "n")]
    assert plan.replace == []


def test_retries_wait_for_their_backoff() -> None:
    plan = plan_for(
        {"a": "", "b": ""},
        [
            row("a", RemoteStatus.ERROR, next_attempt=NOW + 0.5),
            row("b", RemoteStatus.FAILED, requestid="r", next_attempt=NOW + 30),
        ],
    )
    assert plan.add == [] and plan.replace == []
    assert plan.waiting == 2


def test_an_intent_is_looked_up_after_the_grace_never_sent_again() -> None:
    young = row("young", RemoteStatus.INTENT, updated=NOW - 59.0)
    edge = row("edge", RemoteStatus.INTENT, updated=NOW - 60.0)
    old_gone = row("old", RemoteStatus.INTENT, updated=NOW - 3600.0)  # no longer local
    plan = plan_for({"young": "", "edge": ""}, [young, edge, old_gone])
    assert plan.resolve == ["edge", "old"]
    assert plan.add == [] and plan.replace == []
    assert plan.waiting == 1


def test_live_requests_are_left_alone() -> None:
    """Pending requests are tracking's (`sync.tracking`), not the planner's."""
    rows = [
        row("q", RemoteStatus.QUEUED, requestid="rq"),
        row("p", RemoteStatus.PINNING, requestid="rp"),
        row("done", RemoteStatus.PINNED, requestid="rd"),
        row("q-no-id", RemoteStatus.QUEUED),
        row("remote-only", RemoteStatus.PINNING, requestid="rx"),
    ]
    plan = plan_for({"q": "", "p": "", "done": "", "q-no-id": ""}, rows)
    assert plan == ServicePlan(SERVICE)


def test_before_adoption_intents_are_resolved_but_nothing_sent() -> None:
    rows = [
        row("i", RemoteStatus.INTENT, updated=NOW - 1000),
        row("q", RemoteStatus.QUEUED, requestid="rq"),
        row("e", RemoteStatus.ERROR, next_attempt=NOW + 100),
    ]
    plan = plan_for({"new": "", "e": ""}, rows, adopted=False)
    assert plan.adopt is True
    assert plan.resolve == ["i"]
    assert plan.add == [] and plan.replace == []
    assert plan.waiting == 0  # only intents are counted before adoption


# --- deletes, renames and the MFS root ------------------------------------------------------


def test_gone_and_surplus_rows_are_deleted_by_requestid_errors_dropped_intents_kept() -> None:
    rows = [
        row("g1", RemoteStatus.PINNED, requestid="rg1"),
        row("g2", RemoteStatus.ERROR, next_attempt=NOW + 99),
        row("g3", RemoteStatus.INTENT, updated=NOW),
        row("s1", RemoteStatus.QUEUED, requestid="rs1"),
        row("other", RemoteStatus.PINNED, requestid="ro"),
    ]
    plan = plan_service(
        SERVICE,
        {},
        {r.cid: r for r in rows},
        now=NOW,
        adopted=True,
        gone={"g1", "g2", "g3"},
        surplus={"s1"},
    )
    assert plan.remove == [
        Remove("g1", "rg1", "unpinned locally"),
        Remove("s1", "rs1", "extra copy"),
    ]
    assert plan.drop == ["g2"]
    assert plan.waiting == 1, "the intent is settled first, deleted at a later cycle"


def test_a_rename_replaces_only_pinned_requests_and_only_when_asked() -> None:
    rows = [
        row("a", RemoteStatus.PINNED, requestid="ra", name="old"),
        row("b", RemoteStatus.QUEUED, requestid="rb", name="old"),
        row("c", RemoteStatus.PINNED, requestid="rc", name="same"),
        row("d", RemoteStatus.PINNED, requestid="rd", name=None),  # adopted long ago
    ]
    local = {"a": "new", "b": "new", "c": "same", "d": "new"}
    remote = {r.cid: r for r in rows}
    assert plan_service(SERVICE, local, remote, now=NOW, adopted=True).replace == []
    plan = plan_service(SERVICE, local, remote, now=NOW, adopted=True, rename=True)
    assert plan.replace == [Replace("a", "ra", "new", "rename")]


def test_a_new_mfs_root_replaces_the_old_one_and_older_leftovers_go() -> None:
    mfs = "policy/peer/mfs"
    rows = [
        row("root1", RemoteStatus.PINNED, requestid="r1", name=mfs),
        row("root0", RemoteStatus.FAILED, requestid="r0", name=mfs),
        row("pinned-too", RemoteStatus.PINNED, requestid="rp", name="photo"),
    ]
    remote = {r.cid: r for r in rows}
    local = {"root2": mfs, "pinned-too": "photo"}
    plan = plan_service(
        SERVICE, local, remote, now=NOW, adopted=True, mfs_root="root2", mfs_name=mfs
    )
    assert plan.add == []
    [replace] = plan.replace
    assert (replace.cid, replace.name, replace.reason) == ("root2", mfs, "mfs")
    assert replace.requestid in ("r0", "r1") and replace.supersedes in ("root0", "root1")
    [leftover] = plan.remove
    assert leftover.reason == "old MFS root" and leftover.cid != replace.supersedes


def test_old_mfs_roots_wait_while_the_new_roots_outcome_is_unknown() -> None:
    mfs = "policy/peer/mfs"
    rows = [
        row("root1", RemoteStatus.PINNED, requestid="r1", name=mfs),
        row("root2", RemoteStatus.INTENT, requestid="r1", name=mfs, updated=NOW),
    ]
    remote = {r.cid: r for r in rows}
    plan = plan_service(
        SERVICE, {"root2": mfs}, remote, now=NOW, adopted=True, mfs_root="root2", mfs_name=mfs
    )
    assert plan.remove == [] and plan.replace == [] and plan.add == []
    settled = {**remote, "root2": row("root2", RemoteStatus.QUEUED, requestid="r2", name=mfs)}
    plan = plan_service(
        SERVICE, {"root2": mfs}, settled, now=NOW, adopted=True, mfs_root="root2", mfs_name=mfs
    )
    assert plan.remove == [Remove("root1", "r1", "old MFS root")]


def test_the_current_mfs_root_held_as_an_extra_copy_is_not_an_old_root() -> None:
    mfs = "policy/peer/mfs"
    remote = {"root": row("root", RemoteStatus.PINNED, requestid="r", name=mfs)}
    plan = plan_service(SERVICE, {}, remote, now=NOW, adopted=True, mfs_root="root", mfs_name=mfs)
    assert plan.remove == []
