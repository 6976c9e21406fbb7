"""Adversarial review of the storage core: each test reproduces one finding and fails until fixed.

Every test names its finding (``# Finding N``); the numbering matches the review report. They
use real files, real processes, real locks and real resource limits, never mocks. Where a
finding is a hostile or damaged file, the test writes the bytes a broken or malicious clone
would write (a correctly framed segment of a foreign writer), since that is what a git pull
can bring in.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from convstore import ConvstoreError, InvalidInput, Store
from convstore.errors import LockTimeout, SessionNotFound
from convstore.frames import encode_frame, new_compressor
from convstore.ids import format_us, new_id, now_us
from convstore.records import encode_record

from .conftest import run_python, start_python

FOREIGN_WRITER = "0badc0ffee00"  # another clone's writer id, as a git pull brings it in


def foreign_segment(folder: Path, records: list[dict[str, Any]], tail: bytes = b"") -> Path:
    """A hot segment of another clone, framed correctly, holding ``records`` (one frame each)."""
    comp = new_compressor()
    data = b"".join(encode_frame(encode_record(r), comp) for r in records) + tail
    path = folder / f"hot.{FOREIGN_WRITER}.000001.jsonl.zst"
    path.write_bytes(data)
    path.chmod(0o600)  # as `convstore sync` leaves what a merge brought (FORMAT.md, "Modes")
    return path


def raw_record(kind: str, sid: str, **fields: Any) -> dict[str, Any]:
    stamp = now_us()
    return {
        "id": new_id(stamp),
        "kind": kind,
        "session": sid,
        "created_at": format_us(stamp),
        **fields,
    }


def hot_fds_open(folder: Path) -> list[str]:
    """Paths of this process's open descriptors that point into ``folder``."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)) and ".jsonl.zst" in target:
            out.append(target)
    return out


def bytes_read_by_this_process() -> int:
    """The kernel's count of bytes this process has read (``rchar`` of /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


# -- Finding 1: one malformed record makes a session (and store.sessions()) unreadable ----------


class TestMalformedRecordsFromAnotherClone:
    # Finding 1: view.SessionView.apply only guards kind/id/created_at; a record that lacks a
    # kind-specific field (a message without role, a delete without target) raises KeyError out
    # of refresh(), so the session cannot be read at all, and store.sessions() fails for the
    # whole store. Invariant 4 says damage never hides the records around it.
    @pytest.mark.parametrize("kind", ["message", "delete", "checkpoint", "blob"])
    def test_a_record_missing_a_kind_field_does_not_hide_the_session(
        self, store: Store, kind: str
    ) -> None:
        s = store.create_session("victim")
        s.append("user", "still readable")
        store.create_session("bystander").append("user", "other session")
        foreign_segment(s.path, [raw_record(kind, "victim")])
        with Store(store.path) as fresh:
            listed = {x.id for x in fresh.sessions()}
            texts = [m.text for m in fresh.session("victim").messages()]
        assert listed == {"victim", "bystander"}
        assert texts == ["still readable"]


# -- Finding 2: a forked child shares the parent's flock: no mutual exclusion --------------------


class TestForkedProcesses:
    # Finding 2: locks.SessionLock keeps its flock descriptor open across os.fork(). flock locks
    # belong to the open file description, which parent and child then share, so the child's
    # flock() succeeds while the parent holds the lock (gunicorn --preload, multiprocessing
    # "fork"). Two processes then append at once, and Appender._catch_up may truncate the
    # other's frame in flight as a "torn tail".
    def test_a_forked_child_waits_for_the_lock_its_parent_holds(self, store_path: Path) -> None:
        if not hasattr(os, "fork"):
            pytest.skip("needs os.fork")
        with Store(store_path) as st:
            s = st.create_session("forked")
            s.append("user", "opens the session lock file before the fork")
            lock = st._locks.get("forked")
            go_r, go_w = os.pipe()
            res_r, res_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never return into pytest
                code = 1
                try:
                    os.close(go_w)
                    os.close(res_r)
                    os.read(go_r, 1)
                    st._locks.get("forked").timeout = 1.0
                    try:
                        st.session("forked").append("user", "child wrote under the parent's lock")
                        os.write(res_w, b"appended")
                    except LockTimeout:
                        os.write(res_w, b"excluded")
                    code = 0
                finally:
                    os._exit(code)
            os.close(go_r)
            os.close(res_w)
            with lock:
                os.write(go_w, b"x")
                outcome = os.read(res_r, 16)
            os.waitpid(pid, 0)
            os.close(go_w)
            os.close(res_r)
        assert outcome == b"excluded"


# -- Finding 3: the cached view aliases the caller's objects ------------------------------------


class TestCallerObjectsAreNotAliased:
    # Finding 3: Store._note_append applies the very dicts/lists the caller passed (records hold
    # the caller's content, metadata and state values), and readers hand out the cached objects.
    # Mutating a value after save_state()/append() changes what this process reads back, while
    # the files (and every other process) hold the old value.
    def test_mutating_a_saved_state_does_not_change_the_saved_history(self, store: Store) -> None:
        s = store.create_session("agent")
        state: dict[str, Any] = {"messages": ["hello"]}
        s.save_state(state)
        state["messages"].append("world")  # the usual load/modify/save loop of an agent
        s.save_state(state)
        history = [e.state for e in s.state_history()]
        with Store(store.path) as fresh:
            on_disk = [e.state for e in fresh.session("agent").state_history()]
        assert on_disk == [{"messages": ["hello", "world"]}, {"messages": ["hello"]}]
        assert history == on_disk

    def test_mutating_appended_content_does_not_change_the_message(self, store: Store) -> None:
        s = store.create_session("chat")
        assert len(s) == 0  # the view is current, so our own append is applied to it
        parts: list[dict[str, Any]] = [{"type": "text", "text": "what was sent"}]
        s.append("user", parts)
        parts[0]["text"] = "changed afterwards"
        assert s.messages()[-1].text == "what was sent"


# -- Finding 4: deleting the branch point in the parent empties the branch ----------------------


class TestBranchComposition:
    # Finding 4: Store._select cuts the inherited list at the position of parent.message; when
    # that message is deleted in the parent, next(...) falls back to 0 and the branch shows none
    # of the parent's history, though every earlier message still exists.
    def test_deleting_the_branch_point_keeps_the_earlier_history_in_the_branch(
        self, store: Store
    ) -> None:
        p = store.create_session("parent")
        p.append("user", "one")
        p.append("assistant", "two")
        last = p.append("user", "three")
        b = p.branch(branch_id="child")
        b.append("assistant", "branch reply")
        p.delete_message(last.id)
        assert [m.text for m in b.messages()] == ["one", "two", "branch reply"]

    # Finding 11: the parent id of a branch is read from the files and never validated, so a
    # session record from a hostile clone can point the reader outside the store folder.
    def test_a_parent_id_read_from_disk_cannot_escape_the_store(
        self, store: Store, tmp_path: Path
    ) -> None:
        with Store(tmp_path / "elsewhere") as other:
            secret = other.create_session("secret").append("user", "SECRET from another store")
        victim = store.create_session("victim")
        record = raw_record("session", "victim")
        record["parent"] = {"session": "../../elsewhere/sessions/secret", "message": secret.id}
        foreign_segment(victim.path, [record])
        with Store(store.path) as fresh:
            try:
                texts = [m.text for m in fresh.session("victim").messages()]
            except ConvstoreError:
                texts = []  # refusing the record is a fine answer
        assert "SECRET from another store" not in texts


# -- Finding 5: user-supplied created_at is used as the version key of edits and metadata -------


class TestVersionKeys:
    # Finding 5: view._apply_message gives the original message the version key
    # (created_at, id), and an edit the key (its own created_at, id). created_at of a message
    # is the caller's (imports, clock skew between clones), so an edit made now of a message
    # dated later than now is silently ignored: edit() returns the old content.
    def test_an_edit_wins_over_the_message_it_edits_whatever_its_date(self, store: Store) -> None:
        s = store.create_session("future")
        m = s.append("user", "draft", created_at=datetime(2100, 1, 1, tzinfo=timezone.utc))
        assert s.edit(m.id, "final").text == "final"

    def test_update_wins_over_a_session_created_with_a_later_date(self, store: Store) -> None:
        s = store.create_session(
            "imported", title="old", created_at=datetime(2100, 1, 1, tzinfo=timezone.utc)
        )
        s.update(title="new")
        assert s.title == "new"


# -- Finding 6: a timestamp outside years 1000-9999 is written and can never be read back -------


class TestTimestampsThatCannotBeReadBack:
    # Finding 6: ids.format_us writes time.strftime("%Y") which is not zero-padded below year
    # 1000 and has five digits past 9999; parse_us then refuses the string, and
    # SessionView.apply drops the record as a problem. datetime.min is a common "no date"
    # sentinel in importers.
    @pytest.mark.parametrize(
        "when",
        [
            datetime.min.replace(tzinfo=timezone.utc),
            datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        ],
    )
    def test_a_message_date_is_refused_or_read_back(self, store: Store, when: datetime) -> None:
        s = store.create_session("dates")
        try:
            m = s.append("user", "dated", created_at=when)
        except InvalidInput:
            return  # refusing the date before writing is a correct answer
        with Store(store.path) as fresh:
            assert [x.id for x in fresh.session("dates").messages()] == [m.id]

    def test_a_session_created_with_an_old_date_exists_afterwards(self, store: Store) -> None:
        try:
            store.create_session("ancient", created_at=datetime.min.replace(tzinfo=timezone.utc))
        except InvalidInput:
            return  # refusing the date before writing is a correct answer
        with Store(store.path) as fresh:
            try:
                fresh.session("ancient")
            except SessionNotFound:
                pytest.fail("create_session() returned, but the session does not exist")

    # Finding 16: the fast path of ids.parse_us hands the fields to calendar.timegm, which
    # normalises impossible dates instead of refusing them: 31 February is stored as 3 March.
    def test_an_impossible_date_is_refused(self, store: Store) -> None:
        s = store.create_session("feb")
        with pytest.raises(InvalidInput):
            s.append("user", "x", created_at="2026-02-31T10:00:00.000000Z")


# -- Finding 7: a session named like a store-wide lock shares its lock file ---------------------


class TestLockNames:
    # Finding 7: session locks (.cache/locks/<sid>.lock) and store-wide locks
    # (.cache/locks/<name>.lock, "compaction") share one folder and naming, so session
    # "compaction" cannot be written while any compaction runs, and compact("compaction")
    # waits on itself until LockTimeout.
    def test_a_session_named_compaction_is_writable_while_compaction_runs(
        self, store: Store
    ) -> None:
        from convstore.compaction import compaction_lock

        s = store.create_session("compaction")
        store._locks.get("compaction").timeout = 0.5
        with compaction_lock(store, 5.0):
            s.append("user", "hello")
        assert [m.text for m in s.messages()] == ["hello"]


# -- Finding 8: check(repair=True) truncates another clone's segment ----------------------------


class TestRepairOnlyTouchesOwnFiles:
    # Finding 8: check._check_hot truncates the torn tail of every hot segment, whoever owns
    # it. A segment of another clone (pulled with git, or synced mid-write) is then modified
    # here, which breaks invariant 3 (only the owner writes its files) and makes the next git
    # merge conflict with the owner's own repair.
    def test_repair_leaves_another_writers_segment_as_it_is(self, store: Store) -> None:
        s = store.create_session("synced")
        s.append("user", "mine")
        frame_start = encode_frame(b'{"partial": true}\n', new_compressor())[:20]
        path = foreign_segment(s.path, [raw_record("session", "synced")], tail=frame_start)
        before = path.read_bytes()
        store.check(repair=True)
        assert path.read_bytes() == before


# -- Finding 9: an evicted Appender still in use is orphaned (fd leak, never flushed) ----------


class TestAppenderEviction:
    # Finding 9: Store._write takes the Appender out of the cache, then waits for the session
    # lock. If Store._evict_appenders drops it meanwhile (more than 128 sessions written), the
    # thread reopens a descriptor on an Appender that no longer is in Store._appenders:
    # flush() and close() never see it, so its writes are never fsynced in the relaxed sync
    # modes and its descriptor leaks.
    def test_close_releases_every_segment_descriptor(self, store_path: Path) -> None:
        st = Store(store_path, sync="close")
        target = st.create_session("target")
        others = [st.create_session(f"o{i:03d}") for i in range(130)]
        lock_path = store_path / ".cache" / "locks" / "target.lock"
        holder = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process of this clone is appending
        errors: list[BaseException] = []

        def append() -> None:
            try:
                target.append("user", "written through an evicted appender")
            except BaseException as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=append)
        t.start()
        deadline = time.monotonic() + 10
        while "target" not in st._appenders and time.monotonic() < deadline:
            time.sleep(0.001)
        assert "target" in st._appenders, "the appending thread did not start"
        for o in others:  # 130 other sessions: the waiting thread's appender is evicted
            o.append("user", "x")
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        t.join(60)
        assert not errors
        st.close()
        assert hot_fds_open(store_path / "sessions" / "target") == []


# -- Finding 10: a failed roll raises a raw OSError for an append that was stored ---------------

FSIZE_WRITER = """
import resource, signal, sys
from convstore import Store, ConvstoreError
from convstore.frames import encode_frame, new_compressor
from convstore.records import encode_record
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
st = Store(sys.argv[1], roll_bytes=1)   # every append rolls to a new segment
st.create_session("roll")
record = st._record("session", "roll", title="stored before the roll failed")
frame = encode_frame(encode_record(record), new_compressor())
# The frame fits; the 8-byte end marker written by the roll does not.
resource.setrlimit(resource.RLIMIT_FSIZE, (len(frame) + 4, len(frame) + 4))
try:
    st._write("roll", [record])   # the body of every append/update/save_state call
    print("ok")
except ConvstoreError as e:
    print("ConvstoreError")
except OSError as e:
    print("OSError")
"""


class TestFailedRoll:
    # Finding 10: Appender.append only guards the frame write. When _roll() fails afterwards
    # (disk full or a file size limit while writing the end marker, EMFILE or EACCES creating
    # the next segment), the raw OSError escapes although the frame was written and fsynced:
    # the caller is told the append failed, retries, and the message is stored twice.
    def test_an_append_reported_as_failed_was_not_stored(self, store_path: Path) -> None:
        Store(store_path).close()
        out = run_python(FSIZE_WRITER, str(store_path))
        assert out.returncode == 0, out.stderr
        outcome = out.stdout.strip()
        with Store(store_path) as fresh:
            stored = fresh.session("roll").title == "stored before the roll failed"
        assert (outcome, stored) in {("ok", True), ("ConvstoreError", False)}, outcome


# -- Finding 12: more than 128 active sessions make every append re-read its whole segment -----


class TestAppendCost:
    # Finding 12: Store._evict_appenders closes the least recently used Appender beyond 128;
    # reopening it runs Appender._open -> _catch_up, which reads and checksums the whole current
    # segment (up to roll_bytes, 8 MiB). A server with more live conversations than that pays
    # a full segment read on every append: O(segment) per append instead of O(message).
    def test_round_robin_appends_do_not_reread_whole_segments(self, store_path: Path) -> None:
        if not Path("/proc/self/io").exists():
            pytest.skip("needs /proc/self/io to count bytes read")
        with Store(store_path, sync="close") as st:
            history = os.urandom(40_000).hex()  # ~45 KB per segment after compression
            sessions = []
            for i in range(140):
                s = st.create_session(f"c{i:03d}")
                s.append("user", history)
                sessions.append(s)
            for s in sessions:  # one warm round: every appender has been opened once
                s.append("user", "warm")
            before = bytes_read_by_this_process()
            for s in sessions:
                s.append("user", "hi")
            per_append = (bytes_read_by_this_process() - before) / len(sessions)
        assert per_append < 8 * 1024, f"{per_append:,.0f} bytes read per small append"


# -- Finding 13: readers iterate the shared view without its lock ------------------------------


class TestReadersAndWritersInOneProcess:
    # Finding 13: Session.list_checkpoints/get_checkpoint (view.live_checkpoints),
    # state_history and load_state iterate the cached view's dicts without the view lock, while
    # another thread's append mutates them in Store._note_append (under the lock). The reader
    # then fails with "dictionary changed size during iteration".
    def test_listing_checkpoints_while_another_thread_adds_them_does_not_fail(
        self, store: Store
    ) -> None:
        import sys

        s = store.create_session("graph")
        for i in range(300):
            s.put_checkpoint(f"seed{i}", {"step": i})
        errors: list[BaseException] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                s.put_checkpoint(f"cp{i}", {"step": i})
                i += 1

        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(3000):
                try:
                    s.list_checkpoints(with_state=False)
                except RuntimeError as e:
                    errors.append(e)
                    break
        finally:
            stop.set()
            t.join()
            sys.setswitchinterval(old)
        assert not errors, errors[0]


# -- Finding 14: delete_checkpoints("id") deletes one-letter checkpoints ------------------------


class TestCheckpointArguments:
    # Finding 14: Session.delete_checkpoints iterates its argument; a single id passed as a
    # string becomes its characters, so delete_checkpoints("abc") deletes checkpoint "a" and
    # keeps "abc", silently.
    def test_a_single_id_string_is_refused_or_deletes_that_checkpoint(self, store: Store) -> None:
        s = store.create_session("cps")
        s.put_checkpoint("a", {"n": 1})
        s.put_checkpoint("abc", {"n": 2})
        try:
            s.delete_checkpoints("abc")
        except InvalidInput:
            return  # refusing a bare string is a correct answer
        assert [c.checkpoint_id for c in s.list_checkpoints()] == ["a"]


# -- Finding 15: a deleted session still takes writes through an existing handle ---------------


class TestDeletedSessions:
    # Finding 15: Session.append/extend/save_state never check view.dropped. After
    # delete_session(), a handle held elsewhere keeps appending records that no listing or
    # store.session() will ever show (and compaction purges).
    def test_appending_to_a_deleted_session_is_refused(self, store: Store) -> None:
        s = store.create_session("gone")
        s.append("user", "before")
        store.delete_session("gone")
        with pytest.raises(ConvstoreError):
            s.append("user", "after the delete")


# -- Finding 17: a zero-filled tail (power loss in relaxed sync modes) is never repairable ------


class TestZeroFilledTail:
    # Finding 17: after a power loss, ext4/XFS can leave a file whose size grew but whose last
    # blocks read as zeros. frames.scan calls a tail without the magic "bad header", not torn,
    # so neither the next writer nor check(repair=True) truncates it: check() stays not ok
    # forever, though the bytes were never acknowledged by a synced append.
    def test_check_repair_fixes_a_zero_filled_tail(self, store: Store) -> None:
        s = store.create_session("zeros")
        s.append("user", "synced")
        seg = next(s.path.glob("hot.*.jsonl.zst"))
        with open(seg, "ab") as fh:
            fh.write(b"\x00" * 4096)
        store.check(repair=True)
        assert store.check().ok, str(store.check())
        assert [m.text for m in s.messages()] == ["synced"]


# -- Finding 19: reads fail with FileNotFoundError while another process compacts --------------

COMPACTING_WRITER = """
import sys
from convstore import Store
with Store(sys.argv[1]) as st:
    s = st.session("busy")
    for i in range(450):
        s.append("user", f"w{i}")
        if i % 3 == 0:
            st.compact("busy")
"""


class TestReadsDuringCompaction:
    # Finding 19: SessionView._rebuild stats and _read_hot opens each listed file without
    # handling its removal, and compaction in another process removes the inputs it sealed
    # between our listdir and our stat/open. store.session()/len() then raise a raw
    # FileNotFoundError (about 1 read in 300 here). FORMAT.md 5 promises that a file that
    # disappeared triggers a re-read, not an error.
    def test_a_reader_never_fails_while_another_process_compacts(self, store_path: Path) -> None:
        with Store(store_path) as st:
            s = st.create_session("busy")
            s.extend([{"role": "user", "content": f"m{i}"} for i in range(50)])
        proc = start_python(COMPACTING_WRITER, str(store_path))
        failures: list[str] = []
        reads = 0
        try:
            while proc.poll() is None:
                with Store(store_path) as reader:  # a cold reader: lists and reads every file
                    try:
                        len(reader.session("busy"))
                    except Exception as e:  # any escape is the finding
                        failures.append(f"{type(e).__name__}: {e}")
                reads += 1
        finally:
            assert proc.wait(timeout=120) == 0
        assert reads > 100, "the writer finished before the reader could race it"
        assert not failures, f"{len(failures)} of {reads} reads failed; first: {failures[0]}"


# -- Finding 18: times are stamped before the lock, so a forward cursor misses messages ---------


class TestForwardCursors:
    # Finding 18: _message_record/_record take created_at and the id from now_us() before
    # Store._write takes the session lock. A message stamped earlier can be written later than
    # one stamped after it (another thread or process won the lock), so it lands *before* a
    # cursor a reader already holds: messages(after=last_seen.id) never returns it. A consumer
    # that pages forward (sync to a UI, an indexer, watch) loses it for good. The same
    # inversion lets a cp_delete issued first delete a checkpoint put after it.
    def test_paging_forward_from_the_last_seen_message_returns_every_later_write(
        self, store: Store
    ) -> None:
        s = store.create_session("feed")
        s.append("user", "first")
        lock = store._locks.get("feed")
        done = threading.Event()

        def append_first() -> None:
            s.append("user", "stamped first")
            done.set()

        with lock:  # another writer of this process holds the session lock
            t = threading.Thread(target=append_first)
            t.start()
            time.sleep(0.05)  # let the thread reach the lock (the test holds either way)
            s.append("assistant", "stamped second, written first")
            seen = s.messages()  # a reader pages up to here
        t.join(30)
        assert done.is_set()
        later = s.messages(after=seen[-1].id)
        assert [m.text for m in later] == ["stamped first"]


# -- Finding 20: store.sessions() re-reads every session once there are more than 4096 ----------


class TestListingCost:
    # Finding 20: Store._views is an LRU of 4096 views, and sessions() walks every session in
    # name order. With 4097 sessions or more each walk evicts exactly the views it is about
    # to need: every call re-reads every file of the store (the "30 s listing" of the peers).
    @pytest.mark.slow
    def test_a_second_listing_reads_no_segment_again(self, store_path: Path) -> None:
        if not Path("/proc/self/io").exists():
            pytest.skip("needs /proc/self/io to count bytes read")
        with Store(store_path, sync="close") as st:
            for i in range(4200):
                st.create_session(f"s{i:05d}", title="x" * 100)
        with Store(store_path) as st:
            st.sessions()
            before = bytes_read_by_this_process()
            st.sessions()
            again = bytes_read_by_this_process() - before
        assert again < 64 * 1024, f"a second listing read {again:,} bytes"


# -- Finding 21: check() calls a compatible newer record kind an error --------------------------


class TestForwardCompatibility:
    # Finding 21: FORMAT.md 9 says new record kinds that old readers may ignore do not bump the
    # version, and the view does ignore them; but check._record_problem reports any kind
    # outside KINDS as an issue, so check().ok is False on a store a newer convstore wrote.
    def test_check_accepts_a_record_kind_it_does_not_know(self, store: Store) -> None:
        s = store.create_session("newer")
        s.append("user", "hi")
        foreign_segment(s.path, [raw_record("reaction", "newer", target="x", emoji="+1")])
        assert [m.text for m in s.messages()] == ["hi"]
        assert store.check().ok, str(store.check())
