"""Model-based test: any sequence of operations reads back like a plain in-memory model.

Hypothesis drives appends, batches, edits, deletes, branches, session deletes, compactions,
prunes and reopenings against a real store, and after every step each session must read back
exactly as the model says: same messages, same order, same text, nothing extra.

The model's branch rule: a branch shows its parent's messages up to and including the message it
was branched at (compared by ``(created_at, id)``, the store's order), live (an edit or delete
in the parent shows through), merged with its own.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from convstore import SessionNotFound, Store
from convstore.ids import to_us

Key = tuple[int, str]

# Messages are stamped now unless backdated to one of these (a year and more in the past), so
# that prune(older_than="365d") has something to remove and orders mix old and new keys.
OLD = [datetime(2020, 1, d, 12, tzinfo=timezone.utc) for d in (1, 2, 3)]
TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer"])


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


@dataclass
class Msg:
    id: str
    role: str
    text: str
    key: Key


@dataclass
class Sess:
    own: dict[str, Msg] = field(default_factory=dict)
    parent: tuple[str, Key] | None = None  # (parent session, key of the branch point)
    dropped: bool = False


class StoreModel(RuleBasedStateMachine):
    """A real store beside a dict of sessions."""

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="convstore-model-"))
        self.store = Store(self.root / "store")
        self.model: dict[str, Sess] = {}
        self.counter = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the model's reading rule ---------------------------------------------------------

    def view(self, sid: str, depth: int = 0) -> list[Msg]:
        s = self.model[sid]
        own = sorted(s.own.values(), key=lambda m: m.key)
        if s.parent is None or depth > 20:
            return own
        psid, at = s.parent
        inherited = [m for m in self.view(psid, depth + 1) if m.key <= at]
        return sorted(inherited + own, key=lambda m: m.key)

    def live(self) -> list[str]:
        return [sid for sid, s in self.model.items() if not s.dropped]

    # -- rules ----------------------------------------------------------------------------

    @initialize(target=sessions)
    def first_session(self) -> str:
        return self.new_session()

    @rule(target=sessions)
    def create_session(self) -> str:
        return self.new_session()

    def new_session(self) -> str:
        self.counter += 1
        sid = f"s{self.counter}"
        self.store.create_session(sid)
        self.model[sid] = Sess()
        return sid

    @rule(sid=sessions, role=ROLES, text=TEXT, old=st.sampled_from([None, *OLD]))
    def append(self, sid: str, role: str, text: str, old: datetime | None) -> None:
        if self.model[sid].dropped:
            return
        m = self.store.session(sid).append(role, text, created_at=old)
        self.model[sid].own[m.id] = Msg(m.id, role, text, (to_us(m.created_at), m.id))

    @rule(sid=sessions, items=st.lists(st.tuples(ROLES, TEXT), min_size=1, max_size=5))
    def extend(self, sid: str, items: list[tuple[str, str]]) -> None:
        if self.model[sid].dropped:
            return
        made = self.store.session(sid).extend([{"role": r, "content": t} for r, t in items])
        for m, (role, text) in zip(made, items, strict=True):
            self.model[sid].own[m.id] = Msg(m.id, role, text, (to_us(m.created_at), m.id))

    @rule(sid=sessions, pick=st.integers(min_value=0), text=TEXT)
    def edit(self, sid: str, pick: int, text: str) -> None:
        s = self.model[sid]
        if s.dropped or not s.own:
            return
        mid = sorted(s.own)[pick % len(s.own)]
        self.store.session(sid).edit(mid, text)
        s.own[mid].text = text

    @rule(sid=sessions, pick=st.integers(min_value=0))
    def delete_message(self, sid: str, pick: int) -> None:
        s = self.model[sid]
        if s.dropped or not s.own:
            return
        choices = sorted(s.own)
        mid = choices[pick % len(choices)]
        self.store.session(sid).delete_message(mid)
        del s.own[mid]

    @rule(target=sessions, sid=sessions, pick=st.integers(min_value=0))
    def branch(self, sid: str, pick: int) -> str:
        s = self.model[sid]
        visible = self.view(sid)
        if s.dropped or not visible:
            return self.new_session()
        at = visible[pick % len(visible)]
        self.counter += 1
        bid = f"s{self.counter}"
        self.store.branch(sid, at.id, branch_id=bid)
        self.model[bid] = Sess(parent=(sid, at.key))
        return bid

    @rule(sid=consumes(sessions))
    def delete_session(self, sid: str) -> None:
        if self.model[sid].dropped:
            return
        self.store.delete_session(sid)
        self.model[sid].dropped = True

    @precondition(lambda self: has("convstore.compaction"))
    @rule(one=st.booleans(), sid=sessions)
    def compact(self, one: bool, sid: str) -> None:
        self.store.compact(sid if one else None)

    @precondition(lambda self: has("convstore.retention"))
    @rule()
    def prune(self) -> None:
        cutoff = to_us(datetime.now(timezone.utc) - timedelta(days=365))
        self.store.prune("365d")
        for s in self.model.values():
            s.own = {mid: m for mid, m in s.own.items() if m.key[0] >= cutoff}

    @rule(sync=st.sampled_from(["always", "interval", "close"]))
    def reopen(self, sync: str) -> None:
        self.store.close()
        self.store = Store(self.root / "store", sync=sync)  # type: ignore[arg-type]

    # -- what must hold after every step --------------------------------------------------

    @invariant()
    def every_session_reads_back_as_the_model(self) -> None:
        for sid, s in self.model.items():
            if s.dropped:
                with pytest.raises(SessionNotFound):
                    self.store.session(sid)
                continue
            session = self.store.session(sid)
            got = [(m.id, m.role, m.text) for m in session.messages()]
            want = [(m.id, m.role, m.text) for m in self.view(sid)]
            assert got == want, f"session {sid} differs from the model"
            assert len(session) == len(want)
            assert [m.id for m in session._last(3)] == [w[0] for w in want[-3:]]
            # recent(): a suffix that never starts on a tool result. It reaches back to the
            # call of a result cut from it, and leaves out results that answer no call.
            window = [m.id for m in session.recent(3)]
            assert window == [w[0] for w in want[len(want) - len(window) :]]
            assert not window or want[len(want) - len(window)][1] != "tool"
            cut = want[max(0, len(want) - 3) : len(want) - len(window)]
            assert all(w[1] == "tool" for w in cut)

    @invariant()
    def the_listing_holds_exactly_the_live_sessions(self) -> None:
        assert sorted(s.id for s in self.store.sessions()) == sorted(self.live())


StoreModel.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestStoreModel = StoreModel.TestCase


class TestBranchPoint:
    def test_deleting_the_message_a_branch_was_made_at_keeps_the_rest_of_its_history(
        self, store: Store
    ) -> None:
        parent = store.create_session("p")
        first = parent.append("user", "one")
        at = parent.append("assistant", "two")
        branch = store.branch("p", at.id, branch_id="b")
        parent.delete_message(at.id)
        assert [m.text for m in branch.messages()] == ["one"]
        assert first.id in {m.id for m in branch.messages()}

    def test_compacting_a_deleted_parent_keeps_what_a_branch_still_inherits(
        self, store: Store
    ) -> None:
        pytest.importorskip("convstore.compaction")
        parent = store.create_session("p")
        parent.append("user", "one")
        at = parent.append("user", "two")
        branch = store.branch("p", at.id, branch_id="b")
        parent.delete_message(at.id)
        store.delete_session("p")
        assert [m.text for m in branch.messages()] == ["one"]
        store.compact()
        assert [m.text for m in branch.messages()] == ["one"]


class TestRetention:
    def test_prune_removes_old_messages_a_branch_inherits_from_a_deleted_session(
        self, store: Store
    ) -> None:
        pytest.importorskip("convstore.retention")
        parent = store.create_session("p")
        old = parent.append("user", "from 2020", created_at=OLD[0])
        store.branch("p", old.id, branch_id="b").append("user", "new")
        store.delete_session("p")
        store.prune("365d")
        assert [m.text for m in store.session("b").messages()] == ["new"]
