"""Real threads and real processes appending at once: nothing lost, duplicated or interleaved."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

from convstore import Store

from .conftest import run_python, start_python

WRITER = """
import sys
from convstore import Store
path, sessions, tag, n = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4])
with Store(path) as st:
    handles = [st.session(s) for s in sessions]
    for i in range(n):
        h = handles[i % len(handles)]
        if i % 7 == 0:
            h.extend([
                {"role": "user", "content": f"{tag}:{i}:a"},
                {"role": "assistant", "content": f"{tag}:{i}:b"},
            ])
        else:
            h.append("user", f"{tag}:{i}", metadata={"writer": tag})
"""


def by_writer(texts: list[str]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for t in texts:
        tag, i, *_ = t.split(":")
        seen[tag].append(int(i))
    return seen


class TestProcesses:
    def test_processes_appending_to_shared_and_own_sessions_lose_nothing(
        self, store: Store, store_path: Path
    ) -> None:
        store.create_session("shared")
        for w in range(4):
            store.create_session(f"own{w}")
        n = 300
        procs = [
            start_python(WRITER, str(store_path), f"shared,own{w}", f"w{w}", str(n))
            for w in range(4)
        ]
        for p in procs:
            assert p.wait(timeout=300) == 0
        expected_per_writer = n + len(range(0, n, 7))  # extend writes two messages
        total = 0
        for sid in ["shared", "own0", "own1", "own2", "own3"]:
            texts = [m.text for m in store.session(sid).messages()]
            assert len(texts) == len(set(texts)), f"duplicates in {sid}"
            total += len(texts)
            for tag, seq in by_writer(texts).items():
                assert seq == sorted(seq), f"{tag} reordered in {sid}"
        assert total == 4 * expected_per_writer
        assert store.check().ok

    def test_a_reader_process_sees_each_append_whole_or_not_at_all(
        self, store: Store, store_path: Path
    ) -> None:
        store.create_session("live")
        reader = """
import sys, json
from convstore import Store
with Store(sys.argv[1]) as st:
    s = st.session("live")
    counts = []
    while True:
        ms = s.messages()
        for m in ms:
            assert m.text == "x" * 5000 and m.metadata == {"k": list(range(50))}, m
        counts.append(len(ms))
        if len(ms) >= 400:
            break
    assert counts == sorted(counts)
    print(len(set(counts)))
"""
        r = start_python(reader, str(store_path), stdout=-1)
        writer = """
import sys
from convstore import Store
with Store(sys.argv[1]) as st:
    s = st.session("live")
    for i in range(400):
        s.append("assistant", "x" * 5000, metadata={"k": list(range(50))})
"""
        assert run_python(writer, str(store_path)).returncode == 0
        out, _ = r.communicate(timeout=300)
        assert r.returncode == 0
        assert int(out.strip()) > 1  # the reader really watched it grow


class TestThreads:
    def test_threads_sharing_one_store_lose_and_duplicate_nothing(self, store: Store) -> None:
        sessions = [store.create_session(f"t{i}") for i in range(3)]

        def work(tag: int) -> None:
            for i in range(200):
                sessions[i % 3].append("user", f"w{tag}:{i}")

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        texts = [m.text for s in sessions for m in s.messages()]
        assert len(texts) == len(set(texts)) == 1200
        for s in sessions:
            for tag, seq in by_writer([m.text for m in s.messages()]).items():
                assert seq == sorted(seq), tag
        assert store.check().ok
