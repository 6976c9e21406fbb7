"""The Python API an agent calls: sessions, messages, state and checkpoints."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from convstore import (
    CheckpointNotFound,
    InvalidInput,
    Message,
    MessageNotFound,
    SessionExists,
    SessionNotFound,
    Store,
)
from tests.fixtures.cli import ok


class TestSessions:
    def test_a_new_session_gets_a_time_sortable_id_and_its_fields(self, store: Store) -> None:
        s = store.create_session(title="Trip", user_id="alice", org_id="acme", agent_id="bot")
        again = store.session(s.id)
        assert (again.title, again.user_id, again.org_id, again.agent_id) == (
            "Trip",
            "alice",
            "acme",
            "bot",
        )
        assert len(s.id) == 26

    def test_a_session_id_can_be_chosen_and_not_reused(self, store: Store) -> None:
        store.create_session("chat-1")
        with pytest.raises(SessionExists, match="'chat-1' exists"):
            store.create_session("chat-1")

    def test_an_unknown_session_raises_session_not_found_naming_it(self, store: Store) -> None:
        with pytest.raises(SessionNotFound, match="no session 'nope'"):
            store.session("nope")

    def test_sessions_are_listed_newest_activity_first_and_filtered(self, store: Store) -> None:
        a = store.create_session("a", user_id="u1", org_id="o1")
        b = store.create_session("b", user_id="u2", org_id="o1")
        store.create_session("c", user_id="u1", org_id="o2")
        a.append("user", "latest activity")
        assert [s.id for s in store.sessions()] == ["a", "c", "b"]
        assert [s.id for s in store.sessions(user_id="u1")] == ["a", "c"]
        assert [s.id for s in store.sessions(org_id="o1")] == ["a", "b"]
        assert [s.id for s in store.sessions(limit=1, offset=1)] == ["c"]
        assert store.sessions(since="1h") and not store.sessions(until="2000-01-01")
        assert b in store.sessions(org_id="o1")

    def test_update_changes_title_and_metadata_last_writer_wins(self, store: Store) -> None:
        s = store.create_session(title="old", metadata={"k": 1})
        s.update(title="new")
        s.update(metadata={"k": 2})
        assert (store.session(s.id).title, store.session(s.id).metadata) == ("new", {"k": 2})

    def test_a_deleted_session_is_gone_and_its_id_stays_taken(self, store: Store) -> None:
        s = store.create_session("gone")
        s.append("user", "hi")
        store.delete_session("gone")
        with pytest.raises(SessionNotFound):
            store.session("gone")
        assert "gone" not in [x.id for x in store.sessions()]
        with pytest.raises(SessionExists, match="was deleted"):
            store.create_session("gone")

    def test_everything_survives_closing_and_reopening(self, store_path: Path) -> None:
        with Store(store_path) as st:
            s = st.create_session("keep", title="T")
            ids = [s.append("user", f"m{i}").id for i in range(5)]
        with Store(store_path) as st:
            assert [m.id for m in st.session("keep").messages()] == ids
            assert st.session("keep").title == "T"


class TestMessages:
    def test_append_returns_the_message_as_it_reads_back(self, store: Store) -> None:
        s = store.create_session()
        m = s.append("user", "hello", metadata={"lang": "en"})
        assert s.get(m.id) == m
        assert m.created_at.tzinfo is not None and m.metadata == {"lang": "en"}

    def test_messages_come_back_in_append_order(self, store: Store) -> None:
        s = store.create_session()
        sent = [s.append("user" if i % 2 else "assistant", f"m{i}").id for i in range(50)]
        assert [m.id for m in s.messages()] == sent
        assert [m.id for m in s.recent(5)] == sent[-5:]
        assert len(s) == 50

    def test_extend_writes_a_batch_in_order(self, store: Store) -> None:
        s = store.create_session()
        made = s.extend([{"role": "user", "content": f"b{i}"} for i in range(100)])
        assert [m.text for m in s.messages()] == [f"b{i}" for i in range(100)]
        assert [m.id for m in made] == [m.id for m in s.messages()]

    def test_an_explicit_time_orders_an_imported_message(self, store: Store) -> None:
        s = store.create_session()
        s.append("user", "now")
        old = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
        s.append("user", "then", created_at=old)
        assert [m.text for m in s.messages()] == ["then", "now"]
        assert s.messages()[0].created_at == old

    def test_pagination_by_cursor_and_by_date(self, store: Store) -> None:
        s = store.create_session()
        base = datetime(2026, 1, 1, tzinfo=timezone.utc)
        ms = [s.append("user", f"m{i}", created_at=base + timedelta(days=i)) for i in range(10)]
        assert [m.text for m in s.messages(limit=3)] == ["m0", "m1", "m2"]
        assert [m.text for m in s.messages(limit=3, after=ms[2].id)] == ["m3", "m4", "m5"]
        assert [m.text for m in s.messages(limit=3, before=ms[5].id)] == ["m2", "m3", "m4"]
        assert [m.text for m in s.messages(after="2026-01-08")] == ["m7", "m8", "m9"]
        assert [m.text for m in s.messages(before="2026-01-02T00:00:00Z")] == ["m0"]

    def test_a_deleted_message_still_works_as_a_paging_cursor(self, store: Store) -> None:
        s = store.create_session()
        a, b, c = (s.append("user", t) for t in "abc")
        s.delete_message(b.id)
        assert [m.text for m in s.messages(after=b.id)] == ["c"]
        assert [m.text for m in s.messages(before=b.id)] == ["a"]
        assert a.id != c.id

    def test_content_may_be_typed_parts(self, store: Store) -> None:
        s = store.create_session()
        parts: list[dict[str, Any]] = [
            {"type": "text", "text": "look"},
            {"type": "image", "url": "file://cat.png"},
            {"type": "tool_call", "id": "c1", "name": "calc", "arguments": {"x": 1}},
        ]
        m = s.append("assistant", parts)
        s.append("tool", [{"type": "tool_result", "tool_call_id": "c1", "content": "2"}])
        assert s.get(m.id).content == parts
        assert "look" in m.text and "calc" in m.text

    def test_edit_replaces_content_and_records_when(self, store: Store) -> None:
        s = store.create_session()
        m = s.append("user", "teh")
        edited = s.edit(m.id, "the")
        assert (edited.text, s.get(m.id).text) == ("the", "the")
        assert edited.edited_at is not None and edited.created_at == m.created_at

    def test_a_deleted_message_disappears_and_cannot_be_fetched(self, store: Store) -> None:
        s = store.create_session()
        keep, drop = s.append("user", "keep"), s.append("user", "drop")
        s.delete_message(drop.id)
        assert [m.id for m in s.messages()] == [keep.id]
        with pytest.raises(MessageNotFound, match=drop.id):
            s.get(drop.id)
        with pytest.raises(MessageNotFound):
            s.edit(drop.id, "x")

    def test_another_store_object_sees_appends_at_once(
        self, store: Store, store_path: Path
    ) -> None:
        s = store.create_session("shared")
        s.recent(1)
        with Store(store_path) as other:
            other.session("shared").append("user", "from elsewhere")
        assert [m.text for m in s.recent(1)] == ["from elsewhere"]


class TestBranchAndMerge:
    def test_a_branch_shares_history_up_to_its_message_without_copying(self, store: Store) -> None:
        s = store.create_session("main", title="Main")
        a, b = s.append("user", "a"), s.append("assistant", "b")
        s.append("user", "c")
        br = s.branch(at=b.id, branch_id="alt")
        br.append("user", "c2")
        assert [m.text for m in br.messages()] == ["a", "b", "c2"]
        assert br.parent == ("main", b.id)
        assert br.messages()[0].id == a.id  # the same message, not a copy
        assert sum(1 for p in br.path.iterdir()) == 1  # only the branch's own segment

    def test_merge_interleaves_by_time_with_provenance(self, store: Store) -> None:
        t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
        x, y = store.create_session("x"), store.create_session("y")
        x.append("user", "x1", created_at=t0)
        y.append("user", "y1", created_at=t0 + timedelta(minutes=1))
        x.append("user", "x2", created_at=t0 + timedelta(minutes=2))
        merged = store.merge(["x", "y"], session_id="xy")
        assert [m.text for m in merged.messages()] == ["x1", "y1", "x2"]
        assert merged.messages()[1].metadata["merged_from"]["session"] == "y"

    def test_branches_names_the_live_branches_that_still_show_a_deleted_sessions_messages(
        self, store: Store
    ) -> None:
        store.create_session("p").append("user", "the parent's text")
        store.branch("p", branch_id="p.1")
        store.branch("p.1", branch_id="p.1.1")
        store.branch("p", branch_id="p.2")
        store.delete_session("p.2")
        store.create_session("other").append("user", "no branch here")
        store.delete_session("p")
        assert store.branches("p") == ["p.1", "p.1.1"]
        assert [m.text for m in store.session("p.1.1").messages()] == ["the parent's text"]
        store.delete_session("other")
        assert store.branches("other") == []

    def test_merging_a_branch_with_its_parent_keeps_the_shared_history_once(
        self, store: Store
    ) -> None:
        main = store.create_session("main")
        one, two = main.append("user", "one"), main.append("assistant", "two")
        store.branch("main", two.id, branch_id="alt").append("user", "three on alt")
        main.append("user", "three on main")
        merged = store.merge(["main", "alt"], session_id="both")
        texts = [m.text for m in merged.messages()]
        assert sorted(texts[:2]) == ["one", "two"] and len(texts) == 4
        assert sorted(texts[2:]) == ["three on alt", "three on main"]
        provenance = [m.metadata["merged_from"] for m in merged.messages()[:2]]
        assert {p["message"] for p in provenance} == {one.id, two.id}
        assert {p["session"] for p in provenance} == {"main"}

    @pytest.mark.parametrize(
        ("sources", "said"),
        [
            (["main", "main"], "session 'main' is given twice; name each session once"),
            (["main", "alt", "main"], "session 'main' is given twice"),
            (["main"], "merge needs at least two sessions"),
        ],
    )
    def test_a_merge_that_names_a_session_twice_or_alone_is_refused_and_writes_nothing(
        self, store: Store, sources: list[str], said: str
    ) -> None:
        store.create_session("main").append("user", "one")
        store.branch("main", branch_id="alt")
        with pytest.raises(InvalidInput, match=re.escape(said)):
            store.merge(sources, session_id="m")
        assert sorted(store.session_ids()) == ["alt", "main"]


class TestStateAndCheckpoints:
    def test_state_is_saved_loaded_and_kept_as_history(self, store: Store) -> None:
        s = store.create_session()
        assert s.load_state() is None
        s.save_state({"step": 1})
        s.save_state({"step": 2, "notes": ["x"]})
        assert s.load_state() == {"step": 2, "notes": ["x"]}
        assert [h.state["step"] for h in s.state_history()] == [2, 1]

    def test_unchanged_parts_of_a_large_state_are_not_rewritten(self, store: Store) -> None:
        s = store.create_session()
        big = {"history": ["x" * 1000] * 200, "step": 0}
        s.put_checkpoint("c0", big)
        size = sum(p.stat().st_size for p in s.path.iterdir())
        for i in range(1, 20):
            s.put_checkpoint(f"c{i}", {**big, "step": i}, parent_id=f"c{i - 1}")
        grown = sum(p.stat().st_size for p in s.path.iterdir()) - size
        assert grown < 19 * 400  # a few hundred bytes per step, not the 200 KB state
        assert s.get_checkpoint("c7").state == {**big, "step": 7}

    def test_checkpoints_list_newest_first_and_delete(self, store: Store) -> None:
        s = store.create_session()
        for i in range(5):
            s.put_checkpoint(f"c{i}", {"i": i}, metadata={"run": i % 2})
        assert [c.checkpoint_id for c in s.list_checkpoints()] == ["c4", "c3", "c2", "c1", "c0"]
        assert [c.checkpoint_id for c in s.list_checkpoints(before="c2", limit=1)] == ["c1"]
        assert s.get_checkpoint().checkpoint_id == "c4"
        s.delete_checkpoints(["c4"])
        assert s.get_checkpoint().checkpoint_id == "c3"
        s.delete_checkpoints()
        with pytest.raises(CheckpointNotFound):
            s.get_checkpoint()
        s.put_checkpoint("c9", {"i": 9})  # a thread can be reused after it was cleared
        assert s.get_checkpoint().checkpoint_id == "c9"

    def test_namespaces_and_pending_writes_are_kept_apart(self, store: Store) -> None:
        s = store.create_session()
        s.put_checkpoint("c1", {"a": 1}, namespace="")
        s.put_checkpoint("c1", {"a": 2}, namespace="child")
        s.put_writes("c1", "task-1", [("chan", {"v": 1}), ("other", [1, 2])], namespace="child")
        assert s.get_checkpoint("c1", namespace="child").state == {"a": 2}
        writes = s.get_writes("c1", namespace="child")
        assert [(w.task_id, w.writes) for w in writes] == [
            ("task-1", [("chan", {"v": 1}), ("other", [1, 2])])
        ]
        assert s.get_writes("c1") == []


class TestBatchDeletesAndLocks:
    def test_delete_messages_removes_several_in_one_frame(self, store: Store) -> None:
        s = store.create_session()
        ms = s.extend([{"role": "user", "content": str(i)} for i in range(5)])
        frames_before = len(scan_frames(s))
        assert s.delete_messages([ms[1].id, ms[3].id]) == 2
        assert [m.text for m in s.messages()] == ["0", "2", "4"]
        assert len(scan_frames(s)) == frames_before + 1

    def test_clear_empties_a_session_but_keeps_it(self, store: Store) -> None:
        s = store.create_session("c")
        s.extend([{"role": "user", "content": str(i)} for i in range(3)])
        assert s.clear() == 3 and len(store.session("c")) == 0

    def test_writes_of_a_deleted_checkpoint_do_not_come_back(self, store: Store) -> None:
        s = store.create_session()
        s.put_checkpoint("c1", {"a": 1})
        s.put_writes("c1", "t", [("ch", 1)])
        s.delete_checkpoints(["c1"])
        s.put_checkpoint("c1", {"a": 2})
        assert s.get_writes("c1") == []

    def test_the_public_lock_excludes_other_writers_and_lets_its_holder_append(
        self, store: Store
    ) -> None:
        s = store.create_session("locked")
        with store.lock("locked"):
            s.append("user", "inside the lock")
        assert s.recent(1)[0].text == "inside the lock"


def scan_frames(s: Any) -> list[Any]:
    from convstore.frames import scan

    return [f for p in sorted(s.path.glob("hot.*")) for f in scan(p.read_bytes()).frames]


def _call(*ids: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "let me look"}]
    parts += [{"type": "tool_call", "id": i, "name": "lookup", "arguments": {"q": i}} for i in ids]
    return {"role": "assistant", "content": parts}


def _result(call_id: str) -> dict[str, Any]:
    return {
        "role": "tool",
        "content": [{"type": "tool_result", "tool_call_id": call_id, "content": f"{call_id} ok"}],
    }


def _say(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": text}


def _label(m: Message) -> str:
    if isinstance(m.content, str):
        return f"{m.role}:{m.content}"
    calls = [p["id"] for p in m.content if p.get("type") == "tool_call"]
    results = [p["tool_call_id"] for p in m.content if p.get("type") == "tool_result"]
    return f"{m.role}:" + ",".join(calls or results)


# (history, n, what recent(n) shows)
WINDOWS: dict[str, tuple[list[dict[str, Any]], int, list[str]]] = {
    "a result cut from its call reaches back to the call": (
        [
            _say("system", "be brief"),
            _say("user", "q"),
            _call("c1"),
            _result("c1"),
            _say("assistant", "done"),
        ],
        2,
        ["assistant:c1", "tool:c1", "assistant:done"],
    ),
    "several results of one call, cut in the middle": (
        [
            _say("user", "q"),
            _call("c1", "c2", "c3"),
            _result("c1"),
            _result("c2"),
            _result("c3"),
            _say("assistant", "done"),
        ],
        3,
        ["assistant:c1,c2,c3", "tool:c1", "tool:c2", "tool:c3", "assistant:done"],
    ),
    "the window ends on the results": (
        [_say("user", "q"), _call("a", "b"), _result("a"), _result("b")],
        1,
        ["assistant:a,b", "tool:a", "tool:b"],
    ),
    "a window starting on the call is kept as it is": (
        [_say("user", "q"), _call("c1"), _result("c1"), _say("assistant", "done")],
        3,
        ["assistant:c1", "tool:c1", "assistant:done"],
    ),
    "results whose call is not in the session are left out": (
        [_say("user", "q"), _result("lost"), _result("lost2"), _say("assistant", "done")],
        3,
        ["assistant:done"],
    ),
    "a result after a user message answers nothing": (
        [
            _say("user", "q"),
            _call("c1"),
            _say("user", "again"),
            _result("c1"),
            _say("assistant", "done"),
        ],
        2,
        ["assistant:done"],
    ),
    "results imported as plain text answer the assistant before them": (
        [
            _say("user", "q"),
            _say("assistant", "running code"),
            _say("tool", "42"),
            _say("assistant", "it is 42"),
        ],
        2,
        ["assistant:running code", "tool:42", "assistant:it is 42"],
    ),
    "no tool in sight: exactly the last n": (
        [_say("system", "be brief"), _say("user", "a"), _say("assistant", "b"), _say("user", "c")],
        2,
        ["assistant:b", "user:c"],
    ),
    "n larger than the session: all of it": (
        [_call("c1"), _result("c1")],
        10,
        ["assistant:c1", "tool:c1"],
    ),
}


class TestRecentWindow:
    @pytest.mark.parametrize("history,n,shown", WINDOWS.values(), ids=list(WINDOWS))
    def test_recent_never_starts_on_a_tool_result_cut_from_its_call(
        self, store: Store, history: list[dict[str, Any]], n: int, shown: list[str]
    ) -> None:
        s = store.create_session("s")
        s.extend(history)
        assert [_label(m) for m in s.recent(n)] == shown

    def test_a_branch_cut_inside_a_tool_exchange_reaches_back_into_its_parent(
        self, store: Store
    ) -> None:
        parent = store.create_session("p")
        parent.extend([_say("user", "q"), _call("c1", "c2"), _result("c1")])
        branch = store.branch("p", branch_id="b")
        branch.extend([_result("c2"), _say("assistant", "done")])
        assert [_label(m) for m in branch.recent(2)] == [
            "assistant:c1,c2",
            "tool:c1",
            "tool:c2",
            "assistant:done",
        ]

    def test_no_window_of_the_demo_store_starts_on_an_orphaned_tool_result(
        self, tmp_path: Path
    ) -> None:
        ok(None, "demo", str(tmp_path / "demo"))
        windows = cut = 0
        with Store(tmp_path / "demo") as demo:
            for sid in demo.session_ids():
                session = demo.session(sid)
                for n in range(1, len(session.messages()) + 1):
                    window = session.recent(n)
                    windows += 1
                    cut += len(window) != n
                    first = window[0]
                    assert first.role != "tool", (sid, n, first.id)
                    calls = {
                        p["id"]
                        for m in window
                        if not isinstance(m.content, str)
                        for p in m.content
                        if p.get("type") == "tool_call"
                    }
                    for m in window:
                        if not isinstance(m.content, str):
                            for p in m.content:
                                if p.get("type") == "tool_result":
                                    assert p["tool_call_id"] in calls, (sid, n, m.id)
        assert windows > 500 and cut > 0
