"""Compaction: what readers see never changes, replaced bytes go, crashes lose nothing."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from convstore import Store, compaction, frames, layout
from convstore.session import Session

from .conftest import run_python, start_python

OTHER_WRITER = "0123456789ab"


def folder_text(folder: Path) -> str:
    """Everything a session folder holds, as text: raw bytes, decompressed hot segments, and
    every Parquet column, so that a purged string cannot hide anywhere."""
    parts: list[str] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        raw = path.read_bytes()
        parts.append(raw.decode("utf-8", "replace"))
        if layout.HOT_RE.fullmatch(path.name):
            parts.extend(p.decode("utf-8") for _, _, p in frames.scan(raw).frames)
        elif layout.SEALED_RE.fullmatch(path.name):
            table = pq.read_table(path)
            parts.extend(str(v) for col in table.columns for v in col.to_pylist())
    return "\n".join(parts)


def snapshot(session: Session) -> dict[str, Any]:
    """All that a reader can see of a session (but its last-activity time, see below)."""
    info = session.info()
    del info["updated_at"]
    return {
        "info": info,
        "messages": [m.to_dict() for m in session.messages()],
        "states": [(e.id, e.state) for e in session.state_history()],
        "checkpoints": {
            ns: [
                (c.checkpoint_id, c.state, c.metadata)
                for c in session.list_checkpoints(namespace=ns)
            ]
            for ns in ("", "inner")
        },
        "writes": [(w.task_id, w.writes) for w in session.get_writes("cp-1")],
    }


def fresh_snapshot(path: Path, sid: str) -> dict[str, Any]:
    with Store(path) as other:
        return snapshot(other.session(sid))


def files(folder: Path, pattern: str = "*") -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


def random_history(session: Session, rng: random.Random, steps: int) -> None:
    """A random mix of every kind of write a session takes."""
    live: list[str] = []
    for i in range(steps):
        op = rng.random()
        if op < 0.45 or not live:
            live.append(session.append(rng.choice(["user", "assistant"]), f"m{i} " * 5).id)
        elif op < 0.55:
            live.extend(m.id for m in session.extend([{"role": "tool", "content": f"t{i}"}] * 2))
        elif op < 0.65:
            session.edit(rng.choice(live), f"edited {i}")
        elif op < 0.72:
            session.delete_message(live.pop(rng.randrange(len(live))))
        elif op < 0.8:
            session.save_state({"step": i, "notes": ["a", "b"][: i % 3], "big": "x" * (i % 7)})
        elif op < 0.88:
            ns = rng.choice(["", "inner"])
            session.put_checkpoint(f"cp-{i % 4}", {"i": i, "k": [i % 2]}, namespace=ns)
        elif op < 0.92:
            session.delete_checkpoints(
                [f"cp-{rng.randrange(4)}"], namespace=rng.choice(["", "inner"])
            )
        elif op < 0.96:
            session.put_writes("cp-1", f"task-{i % 3}", [("ch", {"v": i})])
        else:
            session.update(title=f"title {i}", metadata={"n": i})


class TestCompactionKeepsWhatReadersSee:
    @pytest.mark.parametrize("seed", range(6))
    def test_a_random_history_reads_the_same_after_every_compaction(
        self, store: Store, store_path: Path, seed: int
    ) -> None:
        rng = random.Random(seed)
        session = store.create_session("s", title="t", user_id="u")
        for _ in range(5):
            random_history(session, rng, rng.randrange(5, 40))
            before = snapshot(session)
            report = store.compact("s")
            assert snapshot(session) == before
            assert fresh_snapshot(store_path, "s") == before
            assert report.sessions[0].skipped is None
        assert store.check().ok

    def test_several_sealed_files_merge_into_one(self, store: Store) -> None:
        session = store.create_session("s")
        for i in range(4):
            session.append("user", f"round {i}")
            store.compact("s")
            assert len(files(session.path, "sealed.*")) == 1
        assert [m.content for m in session.messages()] == [f"round {i}" for i in range(4)]

    def test_a_second_compaction_with_nothing_new_changes_no_file(self, store: Store) -> None:
        session = store.create_session("s")
        session.append("user", "hello")
        store.compact("s")
        before = {p.name: p.stat().st_mtime_ns for p in session.path.iterdir()}
        report = store.compact("s")
        assert report.sessions[0].skipped == "nothing to do"
        assert {p.name: p.stat().st_mtime_ns for p in session.path.iterdir()} == before

    def test_the_sealed_file_is_named_by_the_sha256_of_its_bytes(self, store: Store) -> None:
        session = store.create_session("s")
        session.append("user", "hello")
        name = store.compact("s").sessions[0].sealed
        assert name is not None
        digest = hashlib.sha256((session.path / name).read_bytes()).hexdigest()
        assert name == f"sealed.{store.writer_id}.{digest}.parquet"

    def test_own_closed_segments_are_sealed_and_the_current_one_stays(self, store: Store) -> None:
        session = store.create_session("s")
        session.append("user", "hello")
        own = files(session.path, f"hot.{store.writer_id}.*")
        store.compact("s")
        left = files(session.path, "hot.*")
        # The current segment (empty, the next sequence number) anchors the writer's numbering.
        assert len(left) == 1 and left[0] not in own
        assert (session.path / left[0]).stat().st_size == 0
        session.append("user", "after")
        assert [m.content for m in session.messages()] == ["hello", "after"]

    def test_compacting_a_missing_session_names_it(self, store: Store) -> None:
        with pytest.raises(KeyError, match="no session 'nope'"):
            store.compact("nope")

    @pytest.mark.parametrize(
        ("record", "why"),
        [
            (b'{"id": "x", "kind": "message", "session": "s"}', "a record is malformed"),
            (
                b'{"id": "x", "kind": "message", "session": "s", "created_at": "soon"}',
                "timestamp 'soon' is not ISO-8601",
            ),
        ],
    )
    def test_a_malformed_record_in_a_file_to_seal_leaves_the_session_alone(
        self, store: Store, record: bytes, why: str
    ) -> None:
        session = store.create_session("s")
        session.append("user", "fine")
        frame = frames.encode_frame(record + b"\n", frames.new_compressor())
        # A closed segment of ours, older than the current one: one compaction would seal.
        (session.path / layout.hot_name(store.writer_id, 0)).write_bytes(frame + frames.END_MARKER)
        store.compact("s")  # closes the current segment too
        before = {name: (session.path / name).read_bytes() for name in files(session.path)}
        report = store.compact()
        (problem,) = report.problems
        assert problem.skipped is not None and why in problem.skipped
        assert {name: (session.path / name).read_bytes() for name in files(session.path)} == before

    def test_a_malformed_record_in_another_writers_segment_is_skipped(self, store: Store) -> None:
        session = store.create_session("s")
        session.append("user", "fine")
        bad = b'{"id": "x", "kind": "delete", "session": "s"}\n'  # a tombstone without target
        frame = frames.encode_frame(bad, frames.new_compressor())
        (session.path / layout.hot_name(OTHER_WRITER, 1)).write_bytes(frame)
        report = store.compact("s")
        assert report.sessions[0].sealed is not None and not report.problems
        assert [m.content for m in session.messages()] == ["fine"]

    def test_a_whole_store_compaction_covers_every_session(self, store: Store) -> None:
        for sid in ("a", "b", "c"):
            store.create_session(sid).append("user", sid)
        report = store.compact()
        assert sorted(s.session_id for s in report.compacted) == ["a", "b", "c"]
        assert report.to_dict()["sessions_compacted"] == 3
        assert "compacted 3 of 3 sessions" in str(report)

    def test_an_edit_keeps_counting_as_the_sessions_last_activity(self, store: Store) -> None:
        session = store.create_session("s")
        m = session.append("user", "hello")
        time.sleep(0.002)
        session.edit(m.id, "hello again")
        before = session.updated_at
        store.compact("s")
        assert session.updated_at == before


class TestPurging:
    def test_a_deleted_messages_bytes_are_gone_and_its_tombstone_stays(self, store: Store) -> None:
        session = store.create_session("s")
        keep = session.append("user", "keep this")
        gone = session.append("user", "secret-token-4711")
        session.delete_message(gone.id)
        assert "secret-token-4711" in folder_text(session.path)
        report = store.compact("s")
        assert report.messages_purged == 1
        assert "secret-token-4711" not in folder_text(session.path)
        assert gone.id in folder_text(session.path)  # the tombstone names its target
        assert [m.id for m in session.messages()] == [keep.id]

    def test_an_edited_messages_old_content_is_gone(self, store: Store) -> None:
        session = store.create_session("s")
        m = session.append("user", "first-draft-0815")
        session.edit(m.id, "second-draft-0816")
        session.edit(m.id, "final-text-0817")
        store.compact("s")
        text = folder_text(session.path)
        assert "first-draft-0815" not in text and "second-draft-0816" not in text
        got = session.get(m.id)
        assert got.content == "final-text-0817" and got.edited_at is not None

    def test_a_stale_copy_of_a_deleted_message_cannot_come_back(
        self, store: Store, store_path: Path
    ) -> None:
        session = store.create_session("s")
        gone = session.append("user", "delete me")
        store.flush()
        # What an unsynced clone still holds: the segment with the message, under its own name.
        stale = next(session.path.glob("hot.*")).read_bytes()
        session.delete_message(gone.id)
        store.compact("s")
        (session.path / layout.hot_name(OTHER_WRITER, 1)).write_bytes(stale)
        assert fresh_snapshot(store_path, "s")["messages"] == []

    def test_a_dropped_session_keeps_only_its_session_and_drop_records(self, store: Store) -> None:
        session = store.create_session("s", title="doomed")
        session.append("user", "private-words-991")
        session.save_state({"memory": "private-state-992"})
        session.put_checkpoint("c", {"x": "private-cp-993"})
        store.delete_session("s")
        store.compact("s")
        text = folder_text(session.path)
        assert not any(w in text for w in ("private-words-991", "private-state-992", "private-cp"))
        (name,) = files(session.path, "sealed.*")
        kinds = pq.read_table(session.path / name, columns=["kind"]).column("kind").to_pylist()
        assert sorted(kinds) == ["drop", "session"]
        assert "s" not in store
        with pytest.raises(Exception, match="was deleted"):
            store.create_session("s")

    def test_a_dropped_parent_keeps_what_a_live_branch_inherits(self, store: Store) -> None:
        parent = store.create_session("p")
        ms = [parent.append("user", f"inherited-{i}") for i in range(3)]
        parent.append("user", "after-the-branch-point")
        branch = parent.branch(ms[2].id, branch_id="b")
        branch.append("assistant", "own")
        before = [m.content for m in branch.messages()]
        store.delete_session("p")
        store.compact()
        assert [m.content for m in branch.messages()] == before
        assert "after-the-branch-point" not in folder_text(parent.path)

    def test_a_dropped_parent_keeps_a_branchs_inheritance_after_its_branch_point_went(
        self, store: Store
    ) -> None:
        parent = store.create_session("p")
        parent.append("user", "one")
        at = parent.append("user", "two")
        branch = store.branch("p", at.id, branch_id="b")
        parent.delete_message(at.id)
        store.delete_session("p")
        store.compact()
        assert [m.text for m in branch.messages()] == ["one"]

    def test_a_dropped_parent_whose_branch_was_dropped_too_keeps_nothing(
        self, store: Store
    ) -> None:
        parent = store.create_session("p")
        m = parent.append("user", "inherited-only-by-a-dead-branch")
        parent.branch(m.id, branch_id="b")
        store.delete_session("b")
        store.delete_session("p")
        store.compact()
        assert "inherited-only-by-a-dead-branch" not in folder_text(parent.path)

    def test_deleted_checkpoints_go_and_their_blobs_stay(self, store: Store) -> None:
        session = store.create_session("s")
        session.put_checkpoint("c1", {"a": "shared-value", "b": "only-c1"})
        session.put_checkpoint("c2", {"a": "shared-value", "b": "c2"})
        session.delete_checkpoints(["c1"])
        store.compact("s")
        assert [c.checkpoint_id for c in session.list_checkpoints()] == ["c2"]
        assert session.get_checkpoint("c2").state == {"a": "shared-value", "b": "c2"}
        # Blobs stay: a writer in any clone may reference a blob it already knows without
        # writing it again, so no compactor can prove an unreferenced blob stays unreferenced.
        session.put_checkpoint("c3", {"a": "shared-value", "b": "only-c1"})
        assert session.get_checkpoint("c3").state["b"] == "only-c1"
        assert store.check().ok

    def test_another_writers_segments_are_never_touched_but_their_tombstones_count(
        self, store: Store, store_path: Path
    ) -> None:
        session = store.create_session("s")
        mine = session.append("user", "mine-to-be-deleted-by-the-other-clone")
        with Store(store_path) as other_clone:
            other_clone._writer = OTHER_WRITER  # another clone's identity, as after a git pull
            other = other_clone.session("s")
            other.append("user", "theirs")
            other.delete_message(mine.id)
        theirs = next(session.path.glob(f"hot.{OTHER_WRITER}.*"))
        before = (theirs.read_bytes(), theirs.stat().st_mtime_ns)
        store.compact("s")
        assert (theirs.read_bytes(), theirs.stat().st_mtime_ns) == before
        assert "mine-to-be-deleted" not in "".join(
            folder_text(session.path).split(theirs.read_bytes().decode("utf-8", "replace"))
        )
        (sealed,) = files(session.path, "sealed.*")
        sealed_text = " ".join(pq.read_table(session.path / sealed).column("record").to_pylist())
        assert "mine-to-be-deleted" not in sealed_text and "theirs" not in sealed_text
        assert [m.content for m in session.messages()] == ["theirs"]


class TestAutomaticCompaction:
    def test_a_rolled_segment_is_compacted_in_the_background(self, store_path: Path) -> None:
        with Store(store_path, roll_bytes=2048) as st:
            session = st.create_session("s")
            for i in range(40):
                session.append("user", f"message {i} " + "x" * 200)
            compaction.on_segment_rolled(st, "s")
            assert compaction.wait_for_background(st, timeout=60)
            assert len(files(session.path, "sealed.*")) == 1
            assert len(session.messages()) == 40

    def test_auto_compaction_can_be_switched_off(self, store_path: Path) -> None:
        with Store(store_path, roll_bytes=2048, auto_compact=False) as st:
            session = st.create_session("s")
            for i in range(40):
                session.append("user", f"message {i} " + "x" * 200)
            compaction.on_segment_rolled(st, "s")
            assert compaction.wait_for_background(st, timeout=60)
            assert files(session.path, "sealed.*") == []

    def test_appends_alone_start_a_compaction_past_the_threshold(self, store_path: Path) -> None:
        with Store(store_path, roll_bytes=2048) as st:
            session = st.create_session("s")
            for i in range(40):
                session.append("user", f"message {i} " + "x" * 200)
            assert compaction.wait_for_background(st, timeout=60)
            assert files(session.path, "sealed.*")
            assert len(session.messages()) == 40


# -- crash safety: real processes, real SIGKILL ------------------------------------------------

# Prints an id only after append() returned: that is the acknowledgement.
WRITER = """
import sys
from convstore import Store
path, tag = sys.argv[1], sys.argv[2]
with Store(path, roll_bytes=4096) as st:
    sessions = [st.session("s0"), st.session("s1")]
    i = 0
    while True:
        s = sessions[i % 2]
        print(s.append("user", f"{tag}-{i} " + "y" * 150).id, flush=True)
        i += 1
"""

COMPACTOR = """
import sys
from convstore import Store
with Store(sys.argv[1]) as st:
    while True:
        st.compact()
        print("compacted", flush=True)
"""

# Reads in a loop and reports if a message it saw once is missing later: a partial state.
READER = """
import sys, time
from convstore import Store
seen = {}
deadline = time.monotonic() + float(sys.argv[2])
with Store(sys.argv[1]) as st:
    while time.monotonic() < deadline:
        for sid in ("s0", "s1"):
            now = {m.id for m in st.session(sid).messages()}
            lost = seen.get(sid, set()) - now
            if lost:
                print("LOST", sid, len(lost), flush=True)
            seen[sid] = now
print("reads done", flush=True)
"""


def _kill_compactions(store_path: Path, rounds: int, *, with_reader: bool) -> None:
    with Store(store_path) as st:
        for sid in ("s0", "s1"):
            st.create_session(sid)
    rng = random.Random(5)
    acked: set[str] = set()
    compactions = 0
    reader = None
    if with_reader:
        reader = start_python(READER, str(store_path), str(rounds * 2.0 + 5), stdout=-1)
    for round_ in range(rounds):
        writers = [
            start_python(WRITER, str(store_path), f"r{round_}w{w}", stdout=-1) for w in range(2)
        ]
        compactor = start_python(COMPACTOR, str(store_path), stdout=-1)
        assert compactor.stdout is not None
        # Once it has compacted once, it is in its loop: the kill lands anywhere in a compaction.
        first = compactor.stdout.readline()
        time.sleep(rng.random() * 0.5)
        os.kill(compactor.pid, signal.SIGKILL)
        for w in writers:
            os.kill(w.pid, signal.SIGKILL)
        out, _ = compactor.communicate()
        compactions += (first + out).count("compacted\n")
        for w in writers:
            lines, _ = w.communicate()
            acked.update(line for line in lines.splitlines() if len(line) == 26)
        with Store(store_path) as fresh:
            present = {m.id for sid in ("s0", "s1") for m in fresh.session(sid).messages()}
        missing = acked - present
        assert not missing, f"round {round_}: {len(missing)} acknowledged appends lost"
    if reader is not None:
        reads, _ = reader.communicate(timeout=120)
        assert "reads done" in reads
        assert "LOST" not in reads, reads
    assert compactions >= rounds and len(acked) > 100
    with Store(store_path) as fresh:
        report = fresh.check(repair=True)
        assert all(i.repaired for i in report.issues), str(report)
        assert fresh.check().ok
        ids = [m.id for sid in ("s0", "s1") for m in fresh.session(sid).messages()]
        assert len(ids) == len(set(ids)) and acked <= set(ids)
        fresh.compact()
        for sid in ("s0", "s1"):
            assert len(files(fresh.session(sid).path, "sealed.*")) == 1
        assert fresh.check().ok


class TestCrashSafety:
    def test_sigkilled_compactions_beside_live_writers_lose_nothing(self, store_path: Path) -> None:
        _kill_compactions(store_path, rounds=5, with_reader=False)

    def test_readers_never_see_a_partial_state_while_compactions_come_and_die(
        self, store_path: Path
    ) -> None:
        _kill_compactions(store_path, rounds=4, with_reader=True)

    @pytest.mark.slow
    def test_many_sigkilled_compactions_beside_writers_and_a_reader_lose_nothing(
        self, store_path: Path
    ) -> None:
        _kill_compactions(store_path, rounds=40, with_reader=True)


class TestCompactCommand:
    def test_json_reports_what_was_sealed_and_purged(self, store: Store, store_path: Path) -> None:
        session = store.create_session("s")
        gone = session.append("user", "to delete")
        session.append("user", "to keep")
        session.delete_message(gone.id)
        store.close()
        done = run_python(
            "from convstore.cli import main; main()",
            "compact",
            "--store",
            str(store_path),
            "--json",
        )
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert (body["sessions_compacted"], body["messages_purged"]) == (1, 1)
        assert body["sessions"][0]["sealed"].startswith("sealed.")
