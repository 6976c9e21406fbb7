"""Forking is safe at any point: after SQL, search, listings or statistics, from a thread while
another thread is mid-query, through os.fork, a multiprocessing fork pool or a pre-forking
server. The child can use the store (append, read, SQL, search) and the parent keeps working.

Every scenario that could crash or hang runs where that fails the test rather than the suite:
forks from this process always end in ``os._exit``, pools and servers run in a separate
interpreter under a timeout.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import textwrap
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from convstore import Store
from tests.conftest import run_python, start_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def warm(store: Store, how: str) -> None:
    """Use the store the way a process does before it forks."""
    if how == "sql":
        store.sql("SELECT count(*) FROM messages").scalar()
    elif how == "search":
        store.search("hello")
    elif how == "sessions":
        store.sessions()
    elif how == "stats":
        store.stats()
    else:
        raise AssertionError(how)


def use_in_child(store: Store, word: str) -> None:
    """What a child does with the store it inherited; raises if anything is off."""
    session = store.session("a")
    session.append("user", f"the child says {word}")
    assert any(word in m.text for m in session.recent(5))
    assert store.sql("SELECT count(*) FROM messages WHERE text LIKE ?", [f"%{word}%"]).scalar() == 1
    assert [h.text for h in store.search(word)] == [f"the child says {word}"]
    store.close()


def in_child(body: Callable[[], None]) -> int:
    """Fork; run ``body`` in the child, which exits 0 if it returned, 1 if it raised. The
    parent waits and returns the child's wait status (a crash or a hang shows as a signal)."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        signal.alarm(60)  # a child that hangs is killed, and the test fails
        try:
            body()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def used(store: Store) -> Store:
    store.create_session("a", title="first").append("user", "hello world")
    store.create_session("b").append("assistant", "hello again")
    return store


class TestAForkedChildCanUseTheStore:
    @pytest.mark.parametrize("how", ["sql", "search", "sessions", "stats"])
    def test_a_child_forked_after_a_query_appends_reads_queries_and_searches(
        self, used: Store, how: str
    ) -> None:
        warm(used, how)
        word = f"kumquat{how}"
        assert exit_code(in_child(lambda: use_in_child(used, word))) == 0
        # The parent goes on with its own connections, and sees what the child wrote.
        used.refresh()
        assert used.sql("SELECT count(*) FROM messages WHERE text LIKE ?", [f"%{word}%"]).scalar()
        assert [h.text for h in used.search(word)] == [f"the child says {word}"]
        used.session("b").append("user", "the parent still writes")
        assert used.sql("SELECT count(*) FROM messages").scalar() == 4

    def test_a_child_that_exits_through_the_interpreter_does_not_crash_on_the_way_out(
        self, store_path: Path
    ) -> None:
        # sys.exit runs the interpreter's finalisation, which must not destroy what the
        # child inherited either.
        code = f"""
            import os, sys
            from convstore import Store
            s = Store({str(store_path)!r})
            s.create_session("a").append("user", "hello world")
            s.sql("SELECT 1").scalar(); s.search("hello"); s.sessions(); s.stats()
            pid = os.fork()
            if pid == 0:
                s.session("a").append("user", "fig")
                assert s.sql("SELECT count(*) FROM messages").scalar() == 2
                assert len(s.search("fig")) == 1
                sys.exit(0)
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status))
        """
        result = run_python(textwrap.dedent(code), timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["0"], result.stderr

    def test_a_child_forked_twice_in_a_row_works_at_every_generation(self, used: Store) -> None:
        used.sql("SELECT 1").scalar()

        def grandchild() -> None:
            used.search("hello")
            assert exit_code(in_child(lambda: use_in_child(used, "quince"))) == 0

        assert exit_code(in_child(grandchild)) == 0
        used.refresh()
        assert len(used.search("quince")) == 1


class TestForkingWhileAnotherThreadQueries:
    def test_a_fork_while_another_thread_is_mid_query_leaves_a_usable_child(
        self, used: Store
    ) -> None:
        for i in range(200):
            used.session("b").append("user", f"filler message number {i} hello")
        stop = threading.Event()
        errors: list[BaseException] = []

        def query() -> None:
            try:
                while not stop.is_set():
                    assert used.sql("SELECT role, count(*) FROM messages GROUP BY role").rows
                    used.search("hello message")
            except BaseException as e:
                errors.append(e)

        worker = threading.Thread(target=query)
        worker.start()
        try:
            children = [functools.partial(use_in_child, used, f"plum{n}") for n in range(5)]
            statuses = [in_child(body) for body in children]
        finally:
            stop.set()
            worker.join()
        assert not errors
        assert [exit_code(s) for s in statuses] == [0] * 5
        used.refresh()
        assert used.sql("SELECT count(*) FROM messages WHERE text LIKE '%plum%'").scalar() == 5


POOL = """
import multiprocessing, sys
from convstore import Store

store = Store(sys.argv[1])

def work(n: int) -> int:
    store.session("a").append("user", f"pool item {n} papaya")
    store.refresh()
    found = store.sql("SELECT count(*) FROM messages WHERE text = ?", [f"pool item {n} papaya"])
    assert found.scalar() == 1
    assert any(h.text == f"pool item {n} papaya" for h in store.search("papaya", limit=50))
    return n

if __name__ == "__main__":
    store.create_session("a").append("user", "hello world")
    store.sql("SELECT count(*) FROM messages").scalar(); store.search("hello"); store.sessions()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        print(sorted(pool.map_async(work, range(6)).get(timeout=60)))
    store.refresh()
    print(store.sql("SELECT count(*) FROM messages WHERE text LIKE '%papaya'").scalar())
"""

SERVER = """
import os, sys
from convstore import Store

store = Store(sys.argv[1])
store.create_session("a").append("user", "hello world")
store.sql("SELECT 1").scalar(); store.search("hello"); store.stats()
children = []
for n in range(3):  # a pre-forking server: workers forked up front, serving from the store
    pid = os.fork()
    if pid == 0:
        for k in range(3):
            store.session("a").append("user", f"worker {n} request {k} guava")
            assert store.sql("SELECT count(*) FROM messages").scalar() >= 2
            store.search("guava")
        os._exit(0)
    children.append(pid)
print([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children])
store.refresh()
print(store.sql("SELECT count(*) FROM messages WHERE text LIKE '%guava'").scalar())
"""


class TestForkingProcessModels:
    def test_a_multiprocessing_fork_pool_over_a_used_store_neither_hangs_nor_crashes(
        self, store_path: Path
    ) -> None:
        result = run_python(POOL, str(store_path), timeout=180)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.splitlines() == ["[0, 1, 2, 3, 4, 5]", "6"], result.stderr[-2000:]

    def test_a_pre_forking_server_serves_from_every_worker(self, store_path: Path) -> None:
        result = run_python(SERVER, str(store_path), timeout=180)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.splitlines() == ["[0, 0, 0]", "9"], result.stderr[-2000:]


HOLD_COMPACTION_LOCK = """
import sys, time
from pathlib import Path
from convstore.locks import store_lock
with store_lock(Path(sys.argv[1]), "compaction"):
    print("held", flush=True)
    time.sleep(60)
"""


class TestBackgroundThreadsAcrossFork:
    def test_a_child_forked_during_a_background_compaction_closes_without_waiting_for_it(
        self, store_path: Path
    ) -> None:
        from convstore import compaction

        with Store(store_path, roll_bytes=200) as s:
            s.create_session("a").append("user", "hello")
            # Another process holds the compaction lock, so this process's background
            # compaction is in progress (waiting for it) when the fork happens.
            holder = start_python(HOLD_COMPACTION_LOCK, str(store_path), stdout=subprocess.PIPE)
            try:
                assert holder.stdout is not None and holder.stdout.readline() == "held\n"
                for _ in range(3):  # past roll_bytes: the segment rolls
                    s.session("a").append("user", "x" * 300)
                worker = compaction._workers[s]
                deadline = time.monotonic() + 10
                while not worker._busy and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert worker._busy

                def child() -> None:
                    assert len(s.session("a").recent(10)) == 4
                    s.close()  # waits for this process's compactions: the child has none

                assert exit_code(in_child(child)) == 0
            finally:
                holder.kill()
                holder.wait()
