"""Incremental refresh: only what changed is read, what disappeared is forgotten, and the
fast session listing agrees with the store's own."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from convstore import InvalidInput, Store
from convstore import catalog as catalog_module
from convstore.inotify import FolderWatch

from .conftest import run_python

T0 = datetime(2026, 2, 1, tzinfo=timezone.utc)


def manifest(store: Store) -> dict[str, object]:
    path = store.path / ".cache" / "catalog" / "manifest.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def count(store: Store, where: str = "TRUE") -> int:
    return int(store.sql(f"SELECT count(*) FROM messages WHERE {where}").scalar())


APPEND = """
import sys
from convstore import Store
with Store(sys.argv[1]) as s:
    sess = s.session(sys.argv[2]) if sys.argv[2] in s else s.create_session(sys.argv[2])
    for i in range(int(sys.argv[3])):
        sess.append("user", f"{sys.argv[4]} {i}")
"""


UNCHANGED = """
import json, sys
from convstore import Store
from convstore.ingest import folder_changed, load_positions
with Store(sys.argv[1]) as s:
    s.refresh()
    positions = load_positions(s._query_layer()._catalog)
    print(json.dumps({
        sid: folder_changed(str(s.path / "sessions" / sid), pos)[0]
        for sid, pos in sorted(positions.items())
    }))
"""


def append_elsewhere(store: Store, sid: str, n: int, word: str) -> None:
    done = run_python(APPEND, str(store.path), sid, str(n), word)
    assert done.returncode == 0, done.stderr


class TestIncremental:
    def test_a_refresh_with_nothing_new_writes_nothing(self, store: Store) -> None:
        store.create_session("a").append("user", "hello")
        store.refresh()
        before = manifest(store)
        files = sorted(p.name for p in (store.path / ".cache" / "catalog").iterdir())
        store.refresh()
        store.refresh()
        assert manifest(store) == before
        assert sorted(p.name for p in (store.path / ".cache" / "catalog").iterdir()) == files

    def test_after_a_compaction_another_process_finds_every_folder_unchanged(
        self, store: Store
    ) -> None:
        # Compaction leaves each session an empty new segment. Its inode was once recorded as
        # 0 (nothing had been read from it), so every later refresh in every process found the
        # folder changed and read the whole session again: at 1M messages, a fresh process
        # spent 53 s and 4.9 GB on its first search after a compaction.
        for sid in ("a", "b"):
            sess = store.create_session(sid)
            sess.extend([{"role": "user", "content": f"{sid} {i}"} for i in range(3)])
        store.compact()
        store.refresh()
        before = manifest(store)
        done = run_python(UNCHANGED, str(store.path))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"a": False, "b": False}
        assert manifest(store) == before

    def test_an_append_by_another_process_publishes_one_small_part(self, store: Store) -> None:
        for i in range(5):
            store.create_session(f"s{i}").append("user", f"first {i}")
        store.refresh()
        base, parts = manifest(store)["base"], list(manifest(store)["parts"])  # type: ignore[call-overload]
        append_elsewhere(store, "s3", 2, "later")
        store.refresh()
        m = manifest(store)
        assert m["base"] == base and m["parts"] == [*parts, m["parts"][-1]]  # type: ignore[index]
        assert count(store, "text LIKE 'later%'") == 2
        assert count(store) == 7

    def test_a_new_session_from_another_process_is_listed_and_found(self, store: Store) -> None:
        store.create_session("mine").append("user", "hello")
        store.refresh()
        append_elsewhere(store, "theirs", 3, "platypus")
        assert store.sessions()[0].id == "theirs"  # the listing always reads the folders
        store.refresh()
        assert len(store.search("platypus")) == 3

    def test_a_process_sees_its_own_appends_at_once(self, store: Store) -> None:
        s = store.create_session("a")
        s.append("user", "one")
        assert count(store) == 1
        s.append("user", "two")
        assert count(store) == 2 and store.stats().messages == 2

    def test_sealing_and_pruning_are_followed(self, store: Store) -> None:
        s = store.create_session("a")
        old = s.append("user", "ancient history", created_at=T0)
        s.append("user", "fresh news")
        store.refresh()
        store.compact("a")
        store.refresh()
        # Compaction leaves the next (empty) hot segment open for the next append.
        assert store.sql("SELECT kind FROM files WHERE records > 0").rows == [("sealed",)]
        assert count(store) == 2
        store.prune("90d")
        store.compact()
        store.refresh()
        assert store.sql("SELECT id FROM messages").rows != [(old.id,)]
        assert [r[0] for r in store.sql("SELECT text FROM messages").rows] == ["fresh news"]
        assert store.search("ancient") == []

    def test_a_segment_arriving_from_a_clone_is_read(self, store: Store, tmp_path: Path) -> None:
        store.create_session("shared").append("user", "from here")
        store.refresh()
        with Store(tmp_path / "clone") as clone:
            clone.create_session("shared").append("user", "from the clone")
        src = next((tmp_path / "clone" / "sessions" / "shared").glob("hot.*"))
        # What a git pull does: a new file appears in an existing folder.
        shutil.copy(src, store.path / "sessions" / "shared" / src.name)
        store.refresh()
        assert sorted(r[0] for r in store.sql("SELECT text FROM messages").rows) == [
            "from here",
            "from the clone",
        ]

    def test_a_folder_removed_underneath_is_forgotten(self, store: Store) -> None:
        store.create_session("a").append("user", "doomed words")
        store.create_session("b").append("user", "kept words")
        store.refresh()
        shutil.rmtree(store.path / "sessions" / "a")
        store.refresh()
        assert store.sql("SELECT id FROM sessions").rows == [("b",)]
        assert store.sql("SELECT DISTINCT session_id FROM files").rows == [("b",)]
        assert store.search("doomed") == []

    def test_a_file_replaced_under_the_same_name_is_read_again(self, store: Store) -> None:
        s = store.create_session("a")
        s.append("user", "original words")
        store.refresh()
        hot = next((store.path / "sessions" / "a").glob("hot.*"))
        with Store(store.path.parent / "other") as other:
            other.create_session("a").append("user", "restored words")
            replacement = next((other.path / "sessions" / "a").glob("hot.*")).read_bytes()
        tmp = hot.with_name(".swap")
        tmp.write_bytes(replacement)
        os.replace(tmp, hot)  # a restore or a checkout: same name, another file
        store.refresh()
        assert [r[0] for r in store.sql("SELECT text FROM messages").rows] == ["restored words"]

    def test_parts_past_the_limit_are_merged_into_one_and_the_base_is_kept(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(catalog_module, "MAX_PARTS", 3)
        s = store.create_session("a")
        s.append("user", "turn 0")
        store.refresh()
        base = manifest(store)["base"]
        with Store(store.path) as other:  # another catalog, which loaded the parts so far
            assert count(other) == 1
            for i in range(1, 8):
                s.append("user", f"turn {i}")
                store.refresh()
            s.edit(s.messages()[0].id, "turn zero")
            store.refresh()
            m = manifest(store)
            parts = [str(p) for p in m["parts"]]  # type: ignore[attr-defined]
            assert len(parts) <= 3
            assert m["base"] == base, "merging parts must not rewrite the base"
            for s2 in (store, other):
                assert count(s2) == 8 and len(s2.search("turn", limit=20)) == 8
                assert s2.sql("SELECT text FROM messages ORDER BY created_at LIMIT 1").scalar() == (
                    "turn zero"
                )
        files = {p.name for p in (store.path / ".cache" / "catalog").iterdir()}
        assert {f"part.{p}.arrows" for p in parts} <= files
        assert len([n for n in files if n.startswith("part.")]) == len(parts)

    def test_parts_holding_many_message_rows_are_folded_into_a_new_base(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(catalog_module, "MAX_DELTA_ROWS", 10)
        s = store.create_session("a")
        s.append("user", "turn 0")
        store.refresh()
        base = manifest(store)["base"]
        s.extend({"role": "user", "content": f"turn {i}"} for i in range(1, 20))
        store.refresh()
        m = manifest(store)
        assert m["base"] != base and m["parts"] == []
        assert count(store) == 20 and len(store.search("turn", limit=50)) == 20
        names = {p.name for p in (store.path / ".cache" / "catalog").iterdir()}
        assert len([n for n in names if n.startswith("base.")]) == 1


class TestSessionListing:
    @pytest.fixture
    def many(self, store: Store) -> Store:
        for i, (user, org) in enumerate(
            [("u1", "o1"), ("u2", "o1"), ("u1", "o2"), ("u3", None), ("u1", "o1")]
        ):
            s = store.create_session(f"s{i}", user_id=user, org_id=org, created_at=T0)
            s.append("user", "hi", created_at=T0 + timedelta(days=i))
        store.delete_session("s4")
        store.create_session("empty", created_at=T0 - timedelta(days=1))
        return store

    def listing(self, store: Store, **kw: Any) -> list[str]:
        return store._query_layer().sessions(**kw)

    def core(self, store: Store, **kw: object) -> list[str]:
        return [s.id for s in store.sessions(**kw)]  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "kw",
        [
            {},
            {"user_id": "u1"},
            {"org_id": "o1"},
            {"user_id": "u1", "org_id": "o2"},
            {"limit": 2},
            {"limit": 2, "offset": 2},
            {"offset": 10},
            {"limit": 0},
        ],
    )
    def test_it_agrees_with_the_store(self, many: Store, kw: dict[str, object]) -> None:
        assert self.listing(many, **kw) == self.core(many, **kw)

    def test_newest_activity_first_deleted_left_out(self, many: Store) -> None:
        assert self.listing(many) == ["s3", "s2", "s1", "s0", "empty"]

    def test_bounds_are_microseconds_half_open(self, many: Store) -> None:
        day = 86_400_000_000
        t0 = int(T0.timestamp()) * 1_000_000
        assert self.listing(many, since=t0 + day, until=t0 + 3 * day) == ["s2", "s1"]
        assert self.listing(many, since=t0 + day, until=t0 + 3 * day) == self.core(
            many, since=T0 + timedelta(days=1), until=T0 + timedelta(days=3)
        )

    def test_an_activity_updates_the_order(self, many: Store) -> None:
        many.session("s0").append("user", "back again")
        assert self.listing(many)[0] == "s0"

    def test_bad_bounds_are_refused(self, many: Store) -> None:
        with pytest.raises(InvalidInput):
            self.listing(many, limit=-1)
        with pytest.raises(InvalidInput):
            self.listing(many, offset="x")


class TestFolderWatch:
    """On Linux a refresh learns from inotify which folders changed instead of scanning."""

    @pytest.fixture
    def watch(self, store: Store) -> FolderWatch:
        try:
            w = FolderWatch(store.path / "sessions")
        except OSError as e:
            pytest.skip(f"inotify is not available: {e}")
        for sid in store.session_ids():
            w.watch(sid)
        return w

    def test_appends_new_folders_and_removals_are_reported(
        self, store: Store, watch: FolderWatch
    ) -> None:
        store.create_session("a").append("user", "one")
        assert watch.drain() == {"a"}
        watch.watch("a")
        assert watch.drain() == set()
        append_elsewhere(store, "a", 1, "two")
        assert watch.drain() == {"a"}
        shutil.rmtree(store.path / "sessions" / "a")
        assert watch.drain() == {"a"}

    def test_a_query_sees_another_process_append_without_a_refresh(self, store: Store) -> None:
        if os.uname().sysname != "Linux" or os.environ.get("CONVSTORE_NO_INOTIFY"):
            pytest.skip("without inotify, queries catch up with this process's writes only")
        store.create_session("a").append("user", "one")
        assert count(store) == 1
        append_elsewhere(store, "a", 2, "bilby")
        assert len(store.search("bilby")) == 2
