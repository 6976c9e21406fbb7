"""Review of seal notes: after any refresh, whatever compaction did in this or another process,
the catalog (messages, sessions, files, states, checkpoints, search) is what a cache built from
the files alone gives. Real processes and real files throughout; a note may save time, never
make the catalog wrong."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from convstore import Store
from convstore.catalog import MAX_DELTA_ROWS, MAX_PARTS
from convstore.compaction import compact, wait_for_background
from convstore.sealnotes import notes_dir, read_notes

from .conftest import run_python, start_python
from .test_query_reseal import fill

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)

Snapshot = dict[str, list[str]]

TABLES = (
    ("messages", "id"),
    ("sessions", "id"),
    ("files", "session_id, name"),
    ("states", "id"),
    ("checkpoints", "session_id, namespace, checkpoint_id"),
)
WORDS = ("walrus", "okapi", "zebra", "quagga", "topic1", "edited", "race")

COMPACT = """
import sys
from convstore import Store
from convstore.compaction import compact
with Store(sys.argv[1], auto_compact=False) as s:
    report = compact(s, sys.argv[2] if len(sys.argv) > 2 else None)
    assert not report.problems, report.problems
    print(sum(1 for r in report.sessions if r.sealed))
"""

WRITE = """
import sys
from convstore import Store
with Store(sys.argv[1], auto_compact=False) as s:
    exec(sys.argv[2])
"""

# Appends, edits and deletes, some on messages already sealed; compacts in the background too
# (auto_compact: the first append after another process sealed a segment counts as a roll).
APPEND_LOOP = """
import random, sys
from convstore import Store
from convstore.compaction import wait_for_background
from convstore.errors import ConvstoreError
path, rounds, seed, sessions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
with Store(path) as s:
    for i in range(rounds):
        sess = s.session(f"chat-{rng.randrange(sessions)}")
        msg = sess.append("user", f"race {seed} {i} walrus")
        try:
            # Never the first message: deleting it moves the session's created_at, which a
            # note does not follow (TestSessionTimesAfterACompactionANoteExplains).
            older = sess.messages()[1:12]
            if i % 5 == 4:
                sess.edit(rng.choice(older).id, f"edited by race {seed} {i}")
            if i % 7 == 6:
                sess.delete_message(rng.choice(older).id)
        except ConvstoreError:
            pass  # a message another step deleted first
    wait_for_background(s)
"""

COMPACT_LOOP = """
import sys, time
from convstore import Store
from convstore.compaction import compact
path, rounds = sys.argv[1], int(sys.argv[2])
with Store(path, auto_compact=False) as s:
    for i in range(rounds):
        compact(s, None if i % 2 == 0 else "chat-1")
        time.sleep(0.02)
"""

KILLABLE = """
import sys
from convstore import Store
from convstore.compaction import compact
with Store(sys.argv[1], auto_compact=False) as s:
    print("ready", flush=True)
    compact(s)
"""


# -- helpers ------------------------------------------------------------------------------------


def snapshot(s: Store, *, inodes: bool = True) -> Snapshot:
    """Every public table as JSON rows in a fixed order, and what a few searches find."""
    out: Snapshot = {}
    for table, order in TABLES:
        source = table if inodes or table != "files" else "(SELECT * EXCLUDE (inode) FROM files)"
        rows = s.sql(f"SELECT to_json(t) FROM {source} t ORDER BY {order}").rows
        out[table] = [str(r[0]) for r in rows]
    for word in WORDS:
        hits = s.search(word, limit=1000)
        out[f"search {word}"] = sorted(f"{h.session_id}/{h.message_id}" for h in hits)
    return out


def rebuilt(path: Path) -> Snapshot:
    """What a cache built from nothing gives, in place (the seal notes are left alone)."""
    for part in ("catalog", "index"):
        shutil.rmtree(path / ".cache" / part, ignore_errors=True)
    with Store(path, auto_compact=False) as s:
        s.refresh()
        assert s._query_layer().resealed == 0
        return snapshot(s)


_mirrors = 0


def mirrored(path: Path) -> Snapshot:
    """What a cache built from nothing gives, from a copy of the store without its .cache, so
    that the store's own cache keeps its history (inodes differ in a copy: left out)."""
    global _mirrors
    _mirrors += 1
    mirror = path.parent / f"mirror-{_mirrors}"
    shutil.copytree(path, mirror, ignore=shutil.ignore_patterns(".cache"))
    try:
        with Store(mirror, auto_compact=False) as s:
            s.refresh()
            return snapshot(s, inodes=False)
    finally:
        shutil.rmtree(mirror)


def diff(got: Snapshot, want: Snapshot) -> str:
    lines = []
    for key in sorted(set(got) | set(want)):
        a, b = got.get(key, []), want.get(key, [])
        if a != b:
            lines.append(f"{key}: catalog only {sorted(set(a) - set(b))[:3]}")
            lines.append(f"{key}: rebuild only {sorted(set(b) - set(a))[:3]}")
    return "\n".join(lines)


def rows_only(snap: Snapshot) -> Snapshot:
    """Messages, states, checkpoints and searches: what does not depend on file positions."""
    return {k: v for k, v in snap.items() if k not in ("files", "sessions")}


def assert_same(got: Snapshot, want: Snapshot) -> None:
    assert got == want, diff(got, want)


def compact_elsewhere(path: Path, sid: str | None = None) -> int:
    done = run_python(COMPACT, str(path), *([sid] if sid else []))
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def write_elsewhere(path: Path, code: str) -> None:
    done = run_python(WRITE, str(path), code)
    assert done.returncode == 0, done.stderr


def resealed(s: Store) -> int:
    return s._query_layer().resealed


def require(condition: bool, why: str) -> None:
    """A precondition of the scenario: its failure is not the bug an xfail test shows."""
    if not condition:
        pytest.fail(f"scenario not reached: {why}")


def folder_files(path: Path, sid: str) -> dict[str, Path]:
    return {p.name: p for p in (path / "sessions" / sid).iterdir() if not p.name.startswith(".")}


def sealed_files(path: Path) -> set[str]:
    return {
        f"{d.name}/{p.name}"
        for d in (path / "sessions").iterdir()
        for p in d.iterdir()
        if p.name.startswith("sealed.")
    }


def manifest(path: Path) -> dict[str, object]:
    body: dict[str, object] = json.loads((path / ".cache/catalog/manifest.json").read_bytes())
    return body


def edit_manifest(path: Path, change: Callable[[dict[str, object]], object]) -> None:
    body = manifest(path)
    change(body)
    (path / ".cache/catalog/manifest.json").write_text(json.dumps(body, indent=1) + "\n")


# -- bugs ---------------------------------------------------------------------------------------


SESSION_TIMES = (
    "compaction purges a deleted message; when that message held the session's earliest or "
    "latest record time, the sessions row a note keeps (plan(moved) copies it; take_notes keeps "
    "the view's first_key/last_us) still shows the old created_at/updated_at, a rebuild the new"
)


class TestSessionTimesAfterACompactionANoteExplains:
    def test_deleting_the_earliest_message_keeps_created_at_as_a_rebuild_gives_it(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        with Store(path, auto_compact=False) as s:
            chat = s.create_session("chat", title="imported")
            msgs = chat.extend(
                {"role": "user", "content": f"old {j}", "created_at": T0 + timedelta(minutes=j)}
                for j in range(5)
            )
            chat.delete_message(msgs[0].id)
            s.refresh()
        compact_elsewhere(path)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            got = snapshot(s)
        assert_same(got, rebuilt(path))

    def test_deleting_a_message_dated_after_everything_keeps_updated_at_as_a_rebuild_gives_it(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        with Store(path, auto_compact=False) as s:
            chat = s.create_session("chat", title="scheduled")
            chat.append("user", "now")
            later = chat.append(
                "user", "later", created_at=datetime(2031, 1, 1, tzinfo=timezone.utc)
            )
            chat.delete_message(later.id)
            s.refresh()
        compact_elsewhere(path)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            got = snapshot(s)
        assert_same(got, rebuilt(path))

    def test_a_process_holding_the_view_keeps_the_session_times_a_rebuild_gives(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=2, messages=12)
        with Store(path, auto_compact=False) as s:
            chat = s.session("chat-0")
            chat.append("user", "held open")
            s.refresh()  # the query layer now holds the view of chat-0
            chat.delete_message(chat.messages(limit=1)[0].id)  # the earliest record
            s.refresh()
            compact_elsewhere(path)
            s.refresh()
            got = snapshot(s)
        assert_same(got, rebuilt(path))


BAD_SEALED = (
    "a sealed file that failed verification is recorded as read in full (TrackingView."
    "_read_sealed: ingested = size, records 0), so once restored in place and sealed again, "
    "reseal() takes the note and its records are never read"
)


class TestASealedFileTheCatalogCouldNotRead:
    @pytest.mark.parametrize("holder", ["a fresh process", "a process holding the view"])
    def test_its_records_are_read_once_it_is_restored_and_sealed_again(
        self, tmp_path: Path, holder: str
    ) -> None:
        path = tmp_path / "store"
        with Store(path, auto_compact=False) as s:
            chat = s.create_session("chat", title="chat")
            chat.extend({"role": "user", "content": f"sealed early {j} walrus"} for j in range(5))
            compact(s)
            chat.append("user", "in the open segment")
        [sealed] = [p for n, p in folder_files(path, "chat").items() if n.startswith("sealed.")]
        good = sealed.read_bytes()
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        with open(sealed, "r+b") as fh:
            fh.write(bad)
        inode = sealed.stat().st_ino
        rebuilt(path)  # the catalog reads the damaged file: none of its messages
        with Store(path, auto_compact=False) as s:
            if holder == "a process holding the view":
                s.session("chat").append("user", "read by a view the query layer keeps")
                s.refresh()
                require(len(s._query_layer()._views) == 1, "the view is held")
            require(not s.search("walrus"), "the damaged file was not read")
            # Restored in place (same inode), as from a backup; then sealed again elsewhere.
            with open(sealed, "r+b") as fh:
                fh.write(good)
            require(sealed.stat().st_ino == inode, "restored in place")
            if holder == "a process holding the view":
                s.session("chat").append("user", "read as appended bytes only")
                s.refresh()
            compact_elsewhere(path)
            s.refresh()
            assert len(s.search("walrus")) == 5
            got = snapshot(s)
        assert_same(got, rebuilt(path))


DAMAGED_SEALED = (
    "reseal() never looks at the sealed file a note names (absorb() takes note.size and "
    "note.inode as they were): a file damaged or cut short since the compaction is recorded as "
    "read, where a rebuild finds it unreadable and shows none of its records"
)


class TestASealedFileDamagedAfterItsNote:
    def test_a_sealed_file_cut_short_before_the_refresh_is_not_taken_from_its_note(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=2, messages=12)
        compact_elsewhere(path)
        [sealed] = [p for n, p in folder_files(path, "chat-0").items() if n.startswith("sealed.")]
        with open(sealed, "r+b") as fh:
            fh.truncate(sealed.stat().st_size // 2)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            got = snapshot(s)
        assert_same(got, rebuilt(path))


UNRECORDED_CLOSE = (
    "pre-existing, not from seal notes: a held TrackingView is 'dirty' only when apply() ran, so "
    "a refresh that reads just an end marker (and lists the new empty segment) leaves the files "
    "table and sessions.disk_bytes at the old size, open, without the new segment"
)


class TestASegmentClosedByAnotherProcess:
    def test_a_process_holding_the_view_records_the_end_marker_and_the_next_segment(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=1, messages=12)
        with Store(path, auto_compact=False) as s:
            s.session("chat-0").append("user", "held open")
            s.refresh()
            require(len(s._query_layer()._views) == 1, "the view is held")
            # What a compaction does first (and all it does when it then finds a problem in
            # the session, or dies): close this clone's segment under the session lock.
            write_elsewhere(
                path,
                "with s._locks.get('chat-0'):\n    s._appender('chat-0').close_segment()",
            )
            require(len(folder_files(path, "chat-0")) == 2, "the segment was closed")
            s.refresh()
            got = snapshot(s)
        assert_same(got, rebuilt(path))


# -- what holds ---------------------------------------------------------------------------------


class TestEditsAndDeletesAroundSealing:
    def test_edits_and_deletes_before_and_after_sealing_end_as_a_rebuild(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=4, messages=12)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            a, b = s.session("chat-0"), s.session("chat-1")
            a.edit(a.messages()[6].id, "edited before sealing zebra")
            b.delete_message(b.messages()[7].id)
            s.session("chat-2").save_state({"step": "before"})
            s.refresh()  # the views of these sessions are held
            assert compact_elsewhere(path) == 4
            s.refresh()
            assert resealed(s) == 4
            assert_same(snapshot(s, inodes=False), mirrored(path))

            # Another process edits what is sealed now, deletes a sealed message and compacts
            # again before this process looks: its inputs were not all read, so it reads.
            write_elsewhere(
                path,
                "a = s.session('chat-0'); a.edit(a.messages()[6].id, 'edited after sealing okapi')"
                "\nc = s.session('chat-2'); c.delete_message(c.messages()[2].id)",
            )
            compact_elsewhere(path)
            s.refresh()
            assert_same(snapshot(s, inodes=False), mirrored(path))

            s.delete_session("chat-1")
            s.refresh()
            compact_elsewhere(path)
            s.refresh()
            # The dropped session's messages are purged, which moves its first record: no
            # note for it, so it is read again. The other sessions did not change.
            assert resealed(s) == 4
            got = snapshot(s)
        assert "chat-1" not in "".join(got["sessions"])
        assert not any(h.startswith("chat-1/") for h in got["search topic1"])
        assert_same(got, rebuilt(path))

    def test_a_deleted_session_compacted_in_the_background_of_this_process_is_gone(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=3, messages=12)
        compact_elsewhere(path)
        with Store(path) as s:
            s.refresh()
            s.delete_session("chat-2")
            for i in range(3):  # the first append after a seal elsewhere rolls: compacts here
                s.session(f"chat-{i % 2}").append("user", f"after the seal {i} quagga")
            wait_for_background(s)
            s.refresh()
            compact(s)
            s.refresh()
            got = snapshot(s)
        assert not any(h.startswith("chat-2/") for h in got["search topic1"])
        assert len(got["search quagga"]) == 3
        assert_same(got, rebuilt(path))


class TestCompactionRacingThisProcess:
    def test_appends_and_compactions_in_other_processes_while_this_one_refreshes(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=5, messages=8)
        with Store(path) as s:
            s.refresh()
            for seed in (1, 2):
                writer = start_python(APPEND_LOOP, str(path), "40", str(seed), "5")
                compactor = start_python(COMPACT_LOOP, str(path), "6")
                deadline = time.monotonic() + 60
                while writer.poll() is None or compactor.poll() is None:
                    assert time.monotonic() < deadline, "the writers did not finish"
                    s.refresh()
                    s.search("walrus")
                    s.sql("SELECT count(*) FROM messages").scalar()
                assert writer.returncode == 0 and compactor.returncode == 0
                wait_for_background(s)
                s.refresh()
                assert_same(snapshot(s, inodes=False), mirrored(path))
            got = snapshot(s)
        assert len(got["search race"]) > 0
        assert_same(got, rebuilt(path))

    def test_a_compaction_killed_at_any_step_leaves_nothing_a_refresh_gets_wrong(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=16, messages=6)
        rng = random.Random(7)
        sessions = path / "sessions"

        def sealing() -> bool:
            return any(
                p.name.startswith(".sealing.") for d in sessions.iterdir() for p in d.iterdir()
            )

        with Store(path, auto_compact=False) as s:
            s.refresh()
            before = sealed_files(path)

            def first_sealed() -> bool:
                return bool(sealed_files(path) - before)

            def inputs_going() -> bool:
                now = sealed_files(path)
                return bool(now - before) and bool(before - now)

            def delay() -> bool:
                return time.monotonic() > started + rng.uniform(0.0, 0.4)

            for when in (sealing, first_sealed, inputs_going, delay, delay, delay):
                for i in range(16):
                    s.session(f"chat-{i}").append("user", f"before kill {i} okapi")
                s.refresh()  # read in full, so that every note can apply
                before = sealed_files(path)
                proc = start_python(KILLABLE, str(path), stdout=subprocess.PIPE)
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "ready"
                started = time.monotonic()
                while proc.poll() is None and not when():
                    pass
                proc.kill()
                proc.wait()
                s.refresh()
                assert_same(rows_only(snapshot(s)), rows_only(mirrored(path)))
                s.check(repair=True)  # leftover temporary files go
                # A segment the dead compaction closed, with no record after it, is not
                # recorded by a held view (TestASegmentClosedByAnotherProcess): one more
                # record per session makes every position worth recording.
                for i in range(16):
                    s.session(f"chat-{i}").append("user", f"after kill {i} zebra")
                s.refresh()
                assert_same(snapshot(s, inodes=False), mirrored(path))
            assert compact_elsewhere(path) >= 1
            s.refresh()
            got = snapshot(s)
        assert not list(notes_dir(path).glob("*.json")), "served notes are deleted"
        assert_same(got, rebuilt(path))


class TestFilesChangedByHand:
    def test_a_pull_from_a_clone_that_sealed_the_same_session_is_read(self, tmp_path: Path) -> None:
        a = tmp_path / "a"
        fill(a, sessions=3, messages=12)
        compact_elsewhere(a)
        b = tmp_path / "b"
        shutil.copytree(a, b, ignore=shutil.ignore_patterns(".cache"))  # a clone: its own writer
        base = {sid: set(folder_files(a, sid)) for sid in ("chat-0", "chat-1", "chat-2")}
        with Store(b, auto_compact=False) as sb:
            sb.session("chat-0").append("user", "from the clone okapi")
            compact(sb)
        with Store(a, auto_compact=False) as s:
            s.refresh()
            s.session("chat-0").append("user", "from here zebra")
            s.session("chat-1").append("user", "from here too zebra")
            s.refresh()
            compact_elsewhere(a)  # notes for chat-0 and chat-1
            # A pull: what the clone added arrives, what it deleted of the common base goes.
            for sid, names in base.items():
                ours, theirs = folder_files(a, sid), folder_files(b, sid)
                for name in names - set(theirs):
                    (a / "sessions" / sid / name).unlink(missing_ok=True)
                for name in set(theirs) - names - set(ours):
                    shutil.copy2(theirs[name], a / "sessions" / sid / name)
            s.refresh()
            got = snapshot(s)
            assert resealed(s) >= 1  # chat-1: only this clone's compaction
        assert [h.split("/")[0] for h in got["search okapi"]] == ["chat-0"]
        assert len(got["search zebra"]) == 2
        assert_same(got, rebuilt(a))

    def test_an_input_brought_back_by_hand_after_the_compaction_is_read(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=2, messages=12)
        saved = tmp_path / "saved"
        shutil.copytree(path / "sessions" / "chat-0", saved)
        compact_elsewhere(path)
        for p in saved.iterdir():  # a checkout of the old files next to the new sealed one
            if not (path / "sessions" / "chat-0" / p.name).exists():
                shutil.copy2(p, path / "sessions" / "chat-0" / p.name)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            assert resealed(s) == 1  # chat-1 only
            got = snapshot(s)
        assert_same(got, rebuilt(path))

    def test_a_sealed_file_removed_by_hand_after_its_note_is_not_taken_from_the_note(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=2, messages=12)
        compact_elsewhere(path)
        [sealed] = [p for n, p in folder_files(path, "chat-0").items() if n.startswith("sealed.")]
        sealed.unlink()  # a revert: the session's messages are gone with it
        with Store(path, auto_compact=False) as s:
            s.refresh()
            assert resealed(s) == 1
            got = snapshot(s)
        assert not any(h.startswith("chat-0/") for h in got["search topic1"])
        assert_same(got, rebuilt(path))


class TestPartReadSegments:
    def test_a_torn_tail_the_catalog_left_out_is_read_after_the_seal(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path, sessions=2, messages=12)
        with Store(path, auto_compact=False) as s:
            s.session("chat-0").append("user", "in flight walrus")
        [hot] = [p for n, p in folder_files(path, "chat-0").items() if n.startswith("hot.")]
        data = hot.read_bytes()
        with open(hot, "r+b") as fh:  # the last frame half written, as a reader may see it
            fh.truncate(len(data) - 10)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            require(not s.search("walrus"), "the torn frame was left out")
        with open(hot, "ab") as fh:  # the append completes
            fh.write(data[-10:])
        compact_elsewhere(path)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            assert resealed(s) == 1  # chat-1 only
            assert [h.session_id for h in s.search("walrus")] == ["chat-0"]
            got = snapshot(s)
        assert_same(got, rebuilt(path))


class TestNotesOverTime:
    def test_notes_sealed_again_before_any_refresh_explain_the_newest_file(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=3, messages=12)
        for _ in range(3):  # each compaction frees inodes the next files may reuse
            write_elsewhere(path, "s.session('chat-0').append('user', 'unread zebra')")
            compact_elsewhere(path)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            assert resealed(s) == 2  # chat-0 had bytes the catalog never read
            got = snapshot(s)
        assert len(got["search zebra"]) == 3
        assert not list(notes_dir(path).glob("*.json"))
        assert_same(got, rebuilt(path))

    def test_a_sealed_file_sealed_again_with_bytes_all_read_is_taken_from_its_note(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=2, messages=12)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            compact_elsewhere(path)
            write_elsewhere(path, "s.session('chat-0').append('user', 'read before zebra')")
            s.refresh()  # chat-1 from its note; chat-0 has a segment with records: read
            assert resealed(s) == 1
            compact_elsewhere(path)  # chat-0 only: its sealed file and the segment read
            s.refresh()
            assert resealed(s) == 2
            got = snapshot(s)
        assert_same(got, rebuilt(path))

    def test_notes_left_when_the_cache_was_rebuilt_change_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path, sessions=3, messages=12)
        compact_elsewhere(path)
        rebuilt(path)  # the notes stay: the rebuild reads everything
        require(bool(read_notes(path).files), "the notes outlived the cache")
        write_elsewhere(path, "s.session('chat-0').append('user', 'after the rebuild zebra')")
        compact_elsewhere(path)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            got = snapshot(s)
        assert not list(notes_dir(path).glob("*.json"))
        assert [h.split("/")[0] for h in got["search zebra"]] == ["chat-0"]
        assert_same(got, rebuilt(path))

    def test_a_copy_of_the_store_with_its_cache_trusts_no_note_of_the_original(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=3, messages=12)
        compact_elsewhere(path)
        copy = tmp_path / "copy"
        shutil.copytree(path, copy)  # .cache and its notes too: the copy's files have new inodes
        with Store(copy, auto_compact=False) as s:
            s.refresh()
            assert resealed(s) == 0
            got = snapshot(s)
        assert_same(got, rebuilt(copy))


class TestPartialRefreshes:
    def test_refreshes_of_the_folders_the_watch_reported_take_and_keep_the_right_notes(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=4, messages=12)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            layer = s._query_layer()
            if layer._watch is None or not layer._watch.usable:
                pytest.skip("no inotify here: refreshes always read every folder")
            compact_elsewhere(path, "chat-0")
            compact_elsewhere(path, "chat-1")
            s.sql("SELECT 1")  # catches up with the folders the watch reported
            assert resealed(s) == 2
            assert_same(snapshot(s, inodes=False), mirrored(path))

            for i in range(4):
                s.session(f"chat-{i}").append("user", f"second round {i} quagga")
            s.sql("SELECT 1")
            assert compact_elsewhere(path) == 4  # one file of notes for all four
            layer._refresh(["chat-0"])  # a refresh of one folder only
            assert resealed(s) == 3
            assert len(read_notes(path).files) == 1, "notes of unread folders are kept"
            s.search("quagga")  # the watch reports the rest
            assert resealed(s) == 6
            assert not read_notes(path).files
            got = snapshot(s)
        assert len(got["search quagga"]) == 4
        assert_same(got, rebuilt(path))


class TestTheRewriteRule:
    def test_an_old_manifest_without_message_rows_counts_every_delta_row(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=3, messages=12)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            s.session("chat-0").append("user", "a part before the upgrade")
            s.refresh()
        body = manifest(path)
        require(bool(body["parts"]), "a part exists")
        edit_manifest(path, lambda b: b.pop("message_rows"))
        old_delta = int(str(body["delta_rows"]))
        with Store(path, auto_compact=False) as s:
            assert s.sql("SELECT count(*) FROM messages").scalar() == 3 * 11 + 1
            s.session("chat-1").append("user", "a part after the upgrade walrus")
            s.refresh()
            got = snapshot(s)
        after = manifest(path)
        assert after["parts"], "no rewrite for so few rows"
        assert int(str(after["message_rows"])) >= old_delta + 1  # all old rows as messages
        assert got["search walrus"]
        assert_same(got, rebuilt(path))

    @pytest.mark.parametrize(
        ("message_rows", "delta_rows", "rewrites"),
        [
            (MAX_DELTA_ROWS + 1, MAX_DELTA_ROWS + 1, True),  # messages past the limit
            (None, MAX_DELTA_ROWS + 1, True),  # an old manifest: all of it counts
            (0, MAX_DELTA_ROWS - 100, False),  # small rows under the limit
            (0, MAX_DELTA_ROWS + 10, True),  # small rows past max(limit, half a tiny base)
        ],
    )
    def test_the_parts_are_folded_when_the_rule_says_so(
        self, tmp_path: Path, message_rows: int | None, delta_rows: int, rewrites: bool
    ) -> None:
        path = tmp_path / "store"
        fill(path, sessions=2, messages=12)
        with Store(path, auto_compact=False) as s:
            s.session("chat-0").append("user", "a part")
            s.refresh()
        require(bool(manifest(path)["parts"]), "a part exists")

        def fake(b: dict[str, object]) -> None:
            b["delta_rows"] = delta_rows
            if message_rows is None:
                b.pop("message_rows")
            else:
                b["message_rows"] = message_rows

        edit_manifest(path, fake)
        with Store(path, auto_compact=False) as s:
            s.session("chat-1").append("user", "another part")
            s.refresh()
            got = snapshot(s)
        assert (manifest(path)["parts"] == []) == rewrites
        assert_same(got, rebuilt(path))

    def test_parts_never_pile_up_past_the_limit_refresh_after_refresh(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path, sessions=2, messages=6)
        folded = 0
        with Store(path, auto_compact=False) as s:
            for i in range(MAX_PARTS + 3):
                s.session(f"chat-{i % 2}").append("user", f"part {i}")
                s.refresh()
                body = manifest(path)
                parts = body["parts"]
                assert isinstance(parts, list) and len(parts) <= MAX_PARTS
                assert int(str(body["message_rows"])) <= MAX_DELTA_ROWS
                assert int(str(body["message_rows"])) <= int(str(body["delta_rows"]))
                folded += len(parts) <= 1
            got = snapshot(s)
        assert folded >= 2  # the first part, and parts merged (or rewritten) past the limit
        assert_same(got, rebuilt(path))
