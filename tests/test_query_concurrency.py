"""Several processes use one store's query layer at once: one appending, others refreshing,
searching and running SQL. Nobody sees "database is locked" or half a refresh, and at the
end everyone agrees with the files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from convstore import Store

from .conftest import start_python

WRITER = """
import sys
from convstore import Store
path, n = sys.argv[1], int(sys.argv[2])
with Store(path) as s:
    a = s.session("a")
    for i in range(n):
        a.append("user", f"numbat {i}")
        if i % 10 == 0:
            a.edit(a.messages()[0].id, f"numbat edited {i}")
print("done")
"""

# Refreshes, searches and queries in a loop until the writer's last message is found, checking
# that what it sees is always whole: every message the catalog lists is also in the index.
READER = """
import sys, time
from convstore import Store
path, n = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 120
with Store(path) as s:
    rounds = 0
    while time.monotonic() < deadline:
        s.refresh()
        ids = {r[0] for r in s.sql("SELECT id FROM messages WHERE text LIKE 'numbat%'").rows}
        hits = {h.message_id for h in s.search("numbat", limit=10000)}
        assert hits == ids, (len(hits), len(ids))
        s.stats()
        rounds += 1
        if s.sql("SELECT count(*) FROM messages WHERE text = ?", [f"numbat {n - 1}"]).scalar():
            break
    else:
        raise SystemExit("the last message never showed up")
    s.refresh()
    print(rounds, s.sql("SELECT count(*) FROM messages").scalar())
"""


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    return out


class TestProcesses:
    def test_one_writer_and_two_readers_never_fail_and_agree_at_the_end(
        self, store_path: Path
    ) -> None:
        n = 60
        with Store(store_path) as s:
            s.create_session("a").append("user", "first words")
            s.refresh()
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        writer = start_python(WRITER, str(store_path), str(n), **pipes)
        readers = [start_python(READER, str(store_path), str(n), **pipes) for _ in range(2)]
        assert finish(writer).strip() == "done"
        totals = [finish(r).split() for r in readers]
        assert all(int(rounds) >= 1 for rounds, _ in totals)
        assert {int(total) for _, total in totals} == {n + 1}
        with Store(store_path) as s:
            s.refresh()
            messages = s.session("a").messages()
            assert s.sql("SELECT id, text FROM messages ORDER BY created_at, id").rows == [
                (m.id, m.text) for m in messages
            ]
            assert s.check().ok

    def test_processes_refreshing_a_cold_store_at_once_build_it_once(
        self, store_path: Path
    ) -> None:
        with Store(store_path) as s:
            for i in range(20):
                s.create_session(f"s{i}").append("user", f"echidna {i}")
        code = (
            "import sys\nfrom convstore import Store\n"
            "with Store(sys.argv[1]) as s:\n"
            "    print(len(s.search('echidna', limit=100)))\n"
        )
        procs = [
            start_python(code, str(store_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(3)
        ]
        assert [finish(p).strip() for p in procs] == ["20"] * 3
        catalog = store_path / ".cache" / "catalog"
        assert len(list(catalog.glob("base.*.duckdb"))) == 1

    def test_a_reader_keeps_working_while_another_process_rewrites_the_base(
        self, store_path: Path
    ) -> None:
        with Store(store_path) as s:
            s.create_session("a").append("user", "quoll one")
            assert len(s.search("quoll")) == 1
            code = (
                "import sys\nfrom convstore import Store\n"
                "with Store(sys.argv[1]) as o:\n"
                "    o.session('a').append('user', 'quoll two')\n"
                "    o.reindex()\n"
            )
            proc = start_python(
                code, str(store_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            finish(proc)
            # The old base this process attached was removed; it reads on, then follows.
            assert s.sql("SELECT count(*) FROM messages").scalar() >= 1
            s.refresh()
            assert len(s.search("quoll")) == 2


class TestThreads:
    def test_threads_of_one_process_query_while_another_appends(self, store_path: Path) -> None:
        import threading

        with Store(store_path) as s:
            sess = s.create_session("a")
            sess.append("user", "dingo 0")
            errors: list[BaseException] = []
            stop = threading.Event()

            def reader() -> None:
                try:
                    while not stop.is_set():
                        s.sql("SELECT count(*) FROM messages").scalar()
                        hits = s.search("dingo", limit=1000)
                        # Never a hit twice, never one without its text (half a refresh).
                        assert len({h.message_id for h in hits}) == len(hits)
                        assert all(h.text.startswith("dingo") for h in hits)
                        s.stats()
                except BaseException as e:  # reported below
                    errors.append(e)

            threads = [threading.Thread(target=reader) for _ in range(3)]
            for t in threads:
                t.start()
            for i in range(1, 40):
                sess.append("user", f"dingo {i}")
            stop.set()
            for t in threads:
                t.join()
            assert errors == []
            assert len(s.search("dingo", limit=1000)) == 40
