"""The catalog and index are a cache: deleted, damaged, half-written, of another version or of
another store, they are rebuilt from the files and never trusted; nothing is lost."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from convstore import Store

from .conftest import run_python


def answers(store: Store) -> tuple[object, ...]:
    """What a user would ask of the cache; equal answers mean nothing was lost."""
    return (
        store.sql("SELECT id, session_id, role, text FROM messages ORDER BY id").rows,
        store.sql("SELECT id, title, message_count FROM sessions ORDER BY id").rows,
        sorted((h.message_id, h.snippet) for h in store.search("kiwi", limit=50)),
        store.stats().to_dict()["messages_by_role"],
    )


@pytest.fixture
def built(store_path: Path) -> tuple[Path, tuple[object, ...]]:
    with Store(store_path) as s:
        for i in range(6):
            sess = s.create_session(f"s{i}", title=f"chat {i}", user_id=f"u{i % 2}")
            sess.extend(
                {"role": "user" if j % 2 == 0 else "assistant", "content": f"kiwi {i} {j}"}
                for j in range(5)
            )
        s.session("s0").delete_message(s.session("s0").messages()[0].id)
        s.refresh()
        expected = answers(s)
    return store_path, expected


def cache(path: Path) -> Path:
    return path / ".cache"


def manifest(path: Path) -> dict[str, object]:
    return json.loads((cache(path) / "catalog" / "manifest.json").read_text())  # type: ignore[no-any-return]


def base_file(path: Path) -> Path:
    return cache(path) / "catalog" / str(manifest(path)["base"])


def index_dir(path: Path) -> Path:
    return cache(path) / "index" / str(manifest(path)["index"])


def garble(p: Path) -> None:
    p.write_bytes(os.urandom(max(64, p.stat().st_size // 4)))


def garble_all(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file() and f.stat().st_size:
            garble(f)


DAMAGE: dict[str, Callable[[Path], object]] = {
    "the cache folder deleted": lambda p: shutil.rmtree(cache(p)),
    "the catalog folder deleted": lambda p: shutil.rmtree(cache(p) / "catalog"),
    "the index folder deleted": lambda p: shutil.rmtree(cache(p) / "index"),
    "the manifest garbled": lambda p: garble(cache(p) / "catalog" / "manifest.json"),
    "the manifest truncated": lambda p: (cache(p) / "catalog" / "manifest.json").write_text("{"),
    "the manifest of another version": lambda p: (
        cache(p) / "catalog" / "manifest.json"
    ).write_text(json.dumps({**manifest(p), "version": 999})),
    "the manifest naming a file outside the cache": lambda p: (
        cache(p) / "catalog" / "manifest.json"
    ).write_text(json.dumps({**manifest(p), "base": "../../sessions"})),
    "the base file truncated": lambda p: os.truncate(base_file(p), 4096),
    "the base file garbled": lambda p: garble(base_file(p)),
    "the base file gone": lambda p: base_file(p).unlink(),
    "the index files garbled": lambda p: garble_all(index_dir(p)),
    "the index meta.json gone": lambda p: (index_dir(p) / "meta.json").unlink(),
    "a part missing": lambda p: None,  # set up by the test: see below
}


class TestRebuilt:
    @pytest.mark.parametrize("damage", sorted(DAMAGE))
    def test_a_damaged_cache_is_rebuilt_with_the_same_answers(
        self, built: tuple[Path, tuple[object, ...]], damage: str
    ) -> None:
        path, expected = built
        if damage == "a part missing":
            with Store(path) as s:
                s.session("s1").append("user", "kiwi late")
                s.refresh()
                expected = answers(s)
            parts = manifest(path)["parts"]
            assert parts, "the append should have published a part"
            (cache(path) / "catalog" / f"part.{parts[-1]}.arrows").unlink()  # type: ignore[index]
        else:
            DAMAGE[damage](path)
        with Store(path) as s:
            assert answers(s) == expected
        with Store(path) as s:  # and what was rebuilt is now trusted as it is
            assert answers(s) == expected

    def test_a_cache_copied_with_its_store_is_rebuilt_for_the_copy(
        self, built: tuple[Path, tuple[object, ...]], tmp_path: Path
    ) -> None:
        path, expected = built
        copy = tmp_path / "copy"
        shutil.copytree(path, copy)
        old = manifest(copy)["base"]
        with Store(copy) as s:
            assert answers(s) == expected
        assert manifest(copy)["base"] != old  # the copy did not trust the original's cache

    def test_a_moved_store_keeps_its_cache(
        self, built: tuple[Path, tuple[object, ...]], tmp_path: Path
    ) -> None:
        path, expected = built
        moved = tmp_path / "moved"
        os.rename(path, moved)
        old = manifest(moved)["base"]
        with Store(moved) as s:
            assert answers(s) == expected
        assert manifest(moved)["base"] == old

    def test_leftovers_of_an_interrupted_build_are_ignored_and_removed(
        self, built: tuple[Path, tuple[object, ...]]
    ) -> None:
        path, expected = built
        leftover = cache(path) / "catalog" / ".base.000000099-abcdef.duckdb.tmp"
        leftover.write_bytes(b"half a database")
        with Store(path) as s:
            s.reindex()
            assert answers(s) == expected
        assert not leftover.exists()

    def test_damage_while_a_store_is_open_is_recovered_from(
        self, built: tuple[Path, tuple[object, ...]]
    ) -> None:
        path, expected = built
        with Store(path) as s:
            assert answers(s) == expected
            # Another process rebuilds (a new generation), then the old files are garbled:
            # this process notices the new manifest and follows it.
            done = run_python(
                "import sys\nfrom convstore import Store\n"
                "with Store(sys.argv[1]) as o:\n    o.reindex()\n",
                str(path),
            )
            assert done.returncode == 0, done.stderr
            assert answers(s) == expected
            shutil.rmtree(cache(path))
            s.refresh()
            assert answers(s) == expected


class TestReindex:
    def test_reindex_reports_progress_and_changes_nothing(
        self, built: tuple[Path, tuple[object, ...]]
    ) -> None:
        path, expected = built
        seen: list[tuple[int, int]] = []
        with Store(path) as s:
            s.reindex(progress=lambda done, total: seen.append((done, total)))
            assert answers(s) == expected
        assert seen == [(i, 6) for i in range(1, 7)]

    def test_only_the_current_generation_stays_on_disk(
        self, built: tuple[Path, tuple[object, ...]]
    ) -> None:
        path, _ = built
        with Store(path) as s:
            s.reindex()
            s.reindex()
        names = sorted(p.name for p in (cache(path) / "catalog").iterdir())
        assert names == sorted(["manifest.json", str(manifest(path)["base"])])
        assert [p.name for p in (cache(path) / "index").iterdir()] == [manifest(path)["index"]]


class TestPurged:
    def test_an_edited_and_compacted_text_leaves_the_cache(
        self, built: tuple[Path, tuple[object, ...]]
    ) -> None:
        path, _ = built
        with Store(path) as s:
            s1 = s.session("s1")
            first = s1.messages()[0]
            s1.edit(first.id, "kiwi rewritten")
            s.refresh()
            s.compact("s1")
            s.refresh()
            assert s.sql("SELECT text FROM messages WHERE id = ?", [first.id]).rows == [
                ("kiwi rewritten",)
            ]
        blob = b"".join(p.read_bytes() for p in cache(path).rglob("*") if p.is_file())
        assert b"kiwi 1 0" not in blob


class TestParallelBuild:
    def test_worker_processes_build_the_same_cache_as_one_process(
        self, built: tuple[Path, tuple[object, ...]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from convstore import rebuild

        path, expected = built
        monkeypatch.setattr(rebuild, "PARALLEL_FROM", 1)
        monkeypatch.setattr(rebuild, "CHUNK_SESSIONS", 2)
        if (os.cpu_count() or 1) < 2:
            pytest.skip("one CPU: the build never starts workers")
        seen: list[tuple[int, int]] = []
        with Store(path) as s:
            s.reindex(progress=lambda done, total: seen.append((done, total)))
            assert answers(s) == expected
            assert s.sql("SELECT min(_rk), max(_rk) FROM _base.messages").rows == [(1, 29)]
        assert seen == [(2, 6), (4, 6), (6, 6)]

    def test_a_worker_that_stops_mid_answer_is_an_error(self) -> None:
        import io

        from convstore import ConvstoreError
        from convstore.rebuild import _read_frame

        with pytest.raises(ConvstoreError, match="stopped mid-answer"):
            _read_frame(io.BytesIO((100).to_bytes(8, "little") + b"short"))
        with pytest.raises(ConvstoreError, match="stopped unexpectedly"):
            _read_frame(io.BytesIO(b""))
