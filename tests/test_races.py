"""Races that could lose or hide data within one clone: prune, delete, compaction and a moved
store against appends made by other threads and processes.

Every stress test ends the same way: each id that an append returned is read back by a fresh
Store, and no reader saw a session or a message vanish that was there all along.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from convstore import Store
from convstore.errors import SessionNotFound, StoreError
from convstore.layout import SESSIONS

from .conftest import run_python, start_python

LONG_AGO = datetime(2020, 3, 1, tzinfo=timezone.utc)
OLD = "2020-03-01T12:00:00Z"


def readable(path: Path, acked: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The acknowledged (session, message) pairs that a fresh Store cannot read."""
    missing: list[tuple[str, str]] = []
    with Store(path, auto_compact=False) as fresh:
        for sid, ids in acked.items():
            try:
                s = fresh.session(sid)
            except SessionNotFound:
                missing.extend((sid, mid) for mid in ids)
                continue
            have = {m.id for m in s.messages()}
            missing.extend((sid, mid) for mid in ids if mid not in have)
    return missing


DELETE = """
import sys
from convstore import Store
Store(sys.argv[1]).delete_session(sys.argv[2])
"""


class TestWritesAfterADelete:
    """A session deleted by another process refuses writes: nothing is acknowledged unseen."""

    @pytest.mark.parametrize("what", ["append", "edit", "delete_message", "save_state", "update"])
    def test_a_write_to_a_session_another_process_deleted_is_refused(
        self, store: Store, store_path: Path, what: str
    ) -> None:
        s = store.create_session("s")
        first = s.append("user", "hello")
        assert s.messages() == [first]  # this process's view is current, then goes stale
        r = run_python(DELETE, str(store_path), "s")
        assert r.returncode == 0, r.stderr
        write: dict[str, Callable[[], object]] = {
            "append": lambda: s.append("user", "late"),
            "edit": lambda: s.edit(first.id, "late"),
            "delete_message": lambda: s.delete_message(first.id),
            "save_state": lambda: s.save_state({"k": "late"}),
            "update": lambda: s.update(title="late"),
        }
        with pytest.raises(SessionNotFound, match=r"session 's' was deleted.*nothing was written"):
            write[what]()
        assert "s" not in Store(store_path)

    def test_a_write_to_a_session_deleted_in_another_clone_and_pulled_is_refused(
        self, store: Store, store_path: Path, tmp_path: Path
    ) -> None:
        s = store.create_session("s")
        s.append("user", "hello")
        other = tmp_path / "clone"
        shutil.copytree(store_path, other, ignore=shutil.ignore_patterns(".cache"))
        with Store(other) as clone:
            assert clone.writer_id != store.writer_id
            clone.delete_session("s")
        # What a git pull does: the other clone's segment appears beside ours.
        theirs = other / SESSIONS / "s"
        ours = store_path / SESSIONS / "s"
        for name in os.listdir(theirs):
            if not (ours / name).exists():
                shutil.copy2(theirs / name, ours / name)
        with pytest.raises(SessionNotFound, match="'s' was deleted"):
            s.append("user", "late")

    def test_appends_racing_a_delete_in_another_process_are_never_acknowledged_unseen(
        self, store: Store, store_path: Path
    ) -> None:
        rounds = 6
        for n in range(rounds):
            sid = f"s{n}"
            s = store.create_session(sid)
            s.append("user", "first")
            acked: list[str] = []
            stop = threading.Event()

            def appender(
                s: Store = store, sid: str = sid, acked: list[str] = acked, stop: Any = stop
            ) -> None:
                handle = s.session(sid)
                while not stop.is_set():
                    try:
                        acked.append(handle.append("user", "x").id)
                    except SessionNotFound:
                        return

            threads = [threading.Thread(target=appender) for _ in range(2)]
            for t in threads:
                t.start()
            r = run_python(DELETE, str(store_path), sid)
            stop.set()
            for t in threads:
                t.join()
            assert r.returncode == 0, r.stderr
            # Appends acknowledged before the drop are deleted with the session, as asked;
            # an append written after the drop must have been refused, not acknowledged.
            after_drop = records_after_drop(store_path / SESSIONS / sid)
            assert not set(after_drop) & set(acked), sid


def records_after_drop(folder: Path) -> list[str]:
    """Ids of the records that follow the first drop in the session's hot segments."""
    from convstore import frames

    out: list[str] = []
    for name in sorted(os.listdir(folder)):
        if not name.startswith("hot."):
            continue
        seen_drop = False
        for _, _, payload in frames.scan((folder / name).read_bytes(), 0).frames:
            for record in frames.decode_records(payload):
                if seen_drop:
                    out.append(record["id"])
                seen_drop = seen_drop or record["kind"] == "drop"
    return out


PRUNE = """
import sys
from convstore import Store
store = Store(sys.argv[1], auto_compact=False)
print("ready", flush=True)
report = store.prune("30d")
print(len(report.dropped))
"""


class TestPruneRacingAppends:
    def test_an_append_acknowledged_while_prune_runs_is_never_hidden_by_its_drop(
        self, store_path: Path
    ) -> None:
        n = 120
        with Store(store_path, auto_compact=False) as setup:
            for i in range(n):
                s = setup.create_session(f"p{i:03d}", created_at=LONG_AGO)
                s.append("user", "old", created_at=OLD)
        acked: dict[str, list[str]] = {f"p{i:03d}": [] for i in range(n)}
        with Store(store_path, auto_compact=False) as store:
            handles = [store.session(sid) for sid in acked]
            proc = start_python(PRUNE, str(store_path), stdout=-1, stderr=-1)
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            gone: set[str] = set()
            # Walk the sessions backwards while prune scans them forwards: past the middle,
            # appends land on sessions that prune has scanned (as inactive) and not yet dropped.
            while True:
                for h in reversed(handles):
                    if h.id in gone:
                        continue
                    try:
                        acked[h.id].append(h.append("user", "new").id)
                    except SessionNotFound:
                        gone.add(h.id)
                if proc.poll() is not None:
                    break
            _, err = proc.communicate()
            assert proc.returncode == 0, err
        assert readable(store_path, acked) == []

    def test_prune_racing_deletes_of_the_sessions_it_prunes_finishes_without_error(
        self, store_path: Path
    ) -> None:
        n = 120
        sids = [f"d{i:03d}" for i in range(n)]
        with Store(store_path, auto_compact=False) as setup:
            for sid in sids:
                s = setup.create_session(sid)
                s.append("user", "old", created_at=OLD)
                s.append("user", "new")
        with Store(store_path, auto_compact=False) as store:
            proc = start_python(PRUNE, str(store_path), stdout=-1, stderr=-1)
            # Delete backwards while prune writes tombstones forwards: some sessions go
            # between prune's scan and its tombstones.
            for sid in reversed(sids):
                store.delete_session(sid)
            _, err = proc.communicate()
        assert proc.returncode == 0, err


COMPACT_LOOP = """
import sys, time
from convstore import Store
st = Store(sys.argv[1], auto_compact=False)
st.compact()  # its imports take a while on a busy machine
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    st.compact()
"""


class TestReadersDuringCompaction:
    def test_threads_never_see_their_session_or_message_vanish_while_another_process_compacts(
        self, store_path: Path
    ) -> None:
        with Store(store_path, auto_compact=False) as store:
            sid = "r"
            seeded = store.create_session(sid).extend(
                [{"role": "user", "content": f"seed {i}"} for i in range(1000)]
            )
            errors: list[BaseException] = []
            acked: dict[str, list[str]] = {sid: []}
            proc = start_python(COMPACT_LOOP, str(store_path), "3", stdout=-1, stderr=-1)
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"

            def write(k: int) -> None:
                # New bytes for every compaction to seal; each one makes the readers' next
                # refresh rebuild the view from the files.
                try:
                    while proc.poll() is None:
                        s = store.session(sid)
                        m = s.append("user", f"t{k}")
                        acked[sid].append(m.id)
                        s.edit(m.id, f"t{k} edited")
                        assert s.get(m.id).content == f"t{k} edited"
                        time.sleep(0.005)  # a fair chance for the compaction to take the lock
                except BaseException as e:
                    errors.append(e)

            def read(k: int) -> None:
                try:
                    while proc.poll() is None:
                        s = store.session(sid)
                        assert s.get(seeded[k].id).text == f"seed {k}"
                        assert sid in store
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=write, args=(0,))]
            threads += [threading.Thread(target=read, args=(k,)) for k in range(8)]
            # Hand the GIL over often, so that threads interleave at many more points.
            interval = sys.getswitchinterval()
            sys.setswitchinterval(1e-4)
            try:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            finally:
                sys.setswitchinterval(interval)
            proc.communicate()
        assert errors == []
        assert acked[sid]
        assert readable(store_path, acked) == []


class TestBranchAndMergeAgainstADelete:
    def test_a_branch_is_never_made_from_a_parent_already_deleted(self, store_path: Path) -> None:
        late: list[tuple[str, str]] = []
        with Store(store_path, auto_compact=False) as store, Store(store_path) as other:
            for n in range(10):
                parent = store.create_session(f"p{n}")
                parent.append("user", "hello")
                made: list[str] = []

                def branch(pid: str = parent.id, made: list[str] = made) -> None:
                    try:
                        while True:
                            made.append(store.branch(pid).id)
                    except SessionNotFound:
                        return

                t = threading.Thread(target=branch)
                t.start()
                while not made:
                    pass
                other.delete_session(parent.id)
                t.join()
                with Store(store_path) as fresh:
                    drop = fresh._live_view(parent.id).dropped
                    assert drop is not None
                    for bid in made:
                        record = fresh._live_view(bid).meta["parent"][0]
                        if record > drop:  # the branch's first record came after the drop
                            late.append((bid, parent.id))
        assert late == []

    def test_a_merge_whose_source_was_deleted_first_is_refused(self, store: Store) -> None:
        a = store.create_session("a")
        a.append("user", "x")
        b = store.create_session("b")
        b.append("user", "y")
        Store(store.path).delete_session("b")
        with pytest.raises(SessionNotFound, match="'b'"):
            store.merge(["a", "b"], session_id="m")
        assert "m" not in store


class TestAMovedStore:
    def test_a_write_after_the_store_folder_was_moved_is_refused_and_names_the_move(
        self, store_path: Path, tmp_path: Path
    ) -> None:
        store = Store(store_path)
        s = store.create_session("m")
        kept = s.append("user", "before")
        moved = tmp_path / "moved"
        os.rename(store_path, moved)
        with pytest.raises(StoreError, match=r"moved.*Reopen the store at its new path"):
            s.append("user", "after")
        with pytest.raises(StoreError, match="moved"):
            store.create_session("n")
        assert not store_path.exists()  # no ghost store was started at the old path
        with Store(moved) as reopened:
            assert [m.id for m in reopened.session("m").messages()] == [kept.id]

    def test_a_store_replaced_by_another_folder_at_its_path_refuses_writes(
        self, store_path: Path, tmp_path: Path
    ) -> None:
        store = Store(store_path)
        s = store.create_session("m")
        s.append("user", "before")
        os.rename(store_path, tmp_path / "away")
        shutil.copytree(tmp_path / "away", store_path)
        with pytest.raises(StoreError, match="moved"):
            s.append("user", "after")
