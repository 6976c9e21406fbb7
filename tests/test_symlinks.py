"""Nothing inside a store follows a symbolic link (docs/FORMAT.md, "Symbolic links").

A link can arrive by git (another clone commits it) or be planted by anyone who can write in
the store. Each test plants a real link pointing outside the store and shows that no write
goes through it, no read takes records from it, and ``check`` names it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from convstore import Store
from convstore.errors import UnsafePath
from convstore.layout import hot_name
from tests.fixtures.cli import ok, ok_json, refused

PRECIOUS = b"precious bytes that are not the store's\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside.txt"
    target.write_bytes(PRECIOUS)
    return target


def texts(path: Path, sid: str) -> list[str]:
    with Store(path) as s:
        return [str(m.content) for m in s.session(sid).messages()]


class TestHotSegments:
    def test_a_link_named_like_the_next_segment_is_skipped_and_its_target_is_untouched(
        self, tmp_path: Path, outside: Path
    ) -> None:
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "first")
            writer = s.writer_id
        folder = path / "sessions" / "alpha"
        # Another clone committed links named like this clone's next segments.
        for seq in (2, 3):
            (folder / hot_name(writer, seq)).symlink_to(outside)
        with Store(path, roll_bytes=200, auto_compact=False) as s:
            a = s.session("alpha")
            for i in range(20):
                a.append("user", f"message {i} " + "x" * 40)
        assert outside.read_bytes() == PRECIOUS
        assert texts(path, "alpha") == ["first"] + [f"message {i} " + "x" * 40 for i in range(20)]
        for seq in (2, 3):
            assert (folder / hot_name(writer, seq)).is_symlink()

    def test_a_link_in_place_of_the_first_segment_is_skipped(
        self, tmp_path: Path, outside: Path
    ) -> None:
        path = tmp_path / "store"
        with Store(path) as s:
            writer = s.writer_id
        folder = path / "sessions" / "alpha"
        folder.mkdir(mode=0o700)
        (folder / hot_name(writer, 1)).symlink_to(outside)
        with Store(path) as s:
            s.create_session("alpha").append("user", "hello")
        assert outside.read_bytes() == PRECIOUS
        assert texts(path, "alpha") == ["hello"]

    def test_a_dangling_link_is_not_created_through(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        target = tmp_path / "would-be-created"
        with Store(path) as s:
            s.create_session("alpha").append("user", "first")
            writer = s.writer_id
        (path / "sessions" / "alpha" / hot_name(writer, 2)).symlink_to(target)
        with Store(path, roll_bytes=100, auto_compact=False) as s:
            for i in range(5):
                s.session("alpha").append("user", f"m{i} " + "y" * 60)
        assert not target.exists()
        assert len(texts(path, "alpha")) == 6

    def test_a_link_to_a_segment_of_another_session_is_not_read(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "alpha's")
            s.create_session("beta").append("user", "beta's secret")
        beta_seg = next((path / "sessions" / "beta").glob("hot.*"))
        (path / "sessions" / "alpha" / ("hot.zzzzzzzzzzzz.000001.jsonl.zst")).symlink_to(beta_seg)
        assert texts(path, "alpha") == ["alpha's"]
        with Store(path) as s:
            rows = s.sql("SELECT session_id, text FROM messages ORDER BY text").rows
        assert rows == [("alpha", "alpha's"), ("beta", "beta's secret")]


class TestSealedFiles:
    def test_a_linked_sealed_file_is_neither_read_nor_compacted_nor_deleted_through(
        self, tmp_path: Path
    ) -> None:
        other = tmp_path / "other"
        with Store(other) as s:
            s.create_session("alpha").append("user", "smuggled in")
            s.compact()
        smuggled = next((other / "sessions" / "alpha").glob("sealed.*"))
        before = smuggled.read_bytes()
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "mine")
        link = path / "sessions" / "alpha" / smuggled.name
        link.symlink_to(smuggled)
        assert texts(path, "alpha") == ["mine"]
        with Store(path) as s:
            assert s.sql("SELECT text FROM messages").rows == [("mine",)]
            s.compact()
            assert [str(m.content) for m in s.session("alpha").messages()] == ["mine"]
        assert smuggled.read_bytes() == before
        assert link.is_symlink()


class TestFolders:
    def test_a_linked_session_folder_is_refused_and_not_listed(self, tmp_path: Path) -> None:
        other = tmp_path / "other"
        with Store(other) as s:
            s.create_session("evil").append("user", "from outside")
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "mine")
        (path / "sessions" / "evil").symlink_to(other / "sessions" / "evil")
        with Store(path) as s:
            with pytest.raises(UnsafePath, match=r"evil.*symbolic link"):
                s.session("evil")
            with pytest.raises(UnsafePath, match=r"evil.*symbolic link"):
                s.create_session("evil")
            assert "evil" not in s.session_ids()
            assert [x.id for x in s.sessions()] == ["alpha"]
            assert s.sql("SELECT DISTINCT session_id FROM messages").rows == [("alpha",)]
            assert s.search("outside") == []
            s.compact()
        assert texts(other, "evil") == ["from outside"]

    def test_a_linked_sessions_folder_is_refused_when_the_store_opens(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        Store(path).close()
        elsewhere = tmp_path / "elsewhere"
        (path / "sessions").rename(elsewhere)
        (path / "sessions").symlink_to(elsewhere)
        with pytest.raises(UnsafePath, match=r"sessions.*symbolic link"):
            Store(path)
        assert "sessions is a symbolic link" in refused(path, "ls")

    @pytest.mark.parametrize("linked", [".cache", ".cache/locks", ".cache/locks/sessions"])
    def test_a_linked_cache_folder_is_refused_and_no_lock_file_is_made_through_it(
        self, tmp_path: Path, linked: str
    ) -> None:
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "mine")
        target = tmp_path / "shared-tmp"
        shutil.move(path / linked, target)
        (path / linked).symlink_to(target)
        before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
        with pytest.raises(UnsafePath, match="symbolic link"), Store(path) as s:
            s.session("alpha").append("user", "again")
        message = refused(path, "add", "-s", "alpha", "again")
        assert "symbolic link" in message and linked in message
        assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before

    def test_a_store_reached_through_a_link_works(self, tmp_path: Path) -> None:
        real = tmp_path / "data" / "chats"
        with Store(real) as s:
            s.create_session("alpha").append("user", "hello")
        link = tmp_path / "chats"
        link.symlink_to(real)
        with Store(link) as s:
            s.session("alpha").append("user", "through the link")
            assert s.check().ok
            assert s.check().issues == []
        assert texts(real, "alpha") == ["hello", "through the link"]

    def test_a_linked_marker_is_refused(self, tmp_path: Path, outside: Path) -> None:
        path = tmp_path / "store"
        Store(path).close()
        real = tmp_path / "marker.json"
        shutil.move(path / "convstore.json", real)
        (path / "convstore.json").symlink_to(real)
        with pytest.raises(UnsafePath, match=r"convstore\.json.*symbolic link"):
            Store(path)


class TestCheck:
    def test_check_reports_every_link_and_repair_removes_the_links_not_their_targets(
        self, tmp_path: Path, outside: Path
    ) -> None:
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "mine")
            s.create_session("beta").append("user", "yours")
            assert s.search("mine")
            writer = s.writer_id
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        links = [
            path / "sessions" / "alpha" / hot_name(writer, 7),
            path / "sessions" / "alpha" / ("sealed." + "ab" * 32 + ".parquet"),
            path / "sessions" / "gamma",
            path / "notes.txt",
            path / ".cache" / "catalog" / "extra.duckdb",
        ]
        for link in links:
            link.symlink_to(elsewhere if link.name == "gamma" else outside)
        with Store(path) as s:
            report = s.check()
            flagged = {i.path: i.problem for i in report.issues}
            assert not report.ok
            for link in links:
                assert "symbolic link" in flagged[str(link)], flagged
                assert "check --repair" in flagged[str(link)]
            assert len(report.issues) == len(links)
            repaired = s.check(repair=True)
            assert repaired.ok
            assert s.check().issues == []
        for link in links:
            assert not os.path.lexists(link)
        assert outside.read_bytes() == PRECIOUS
        assert elsewhere.is_dir()
        assert texts(path, "alpha") == ["mine"]

    def test_the_cli_check_names_a_link(self, tmp_path: Path, outside: Path) -> None:
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "mine")
        link = path / "sessions" / "alpha" / ("sealed." + "cd" * 32 + ".parquet")
        link.symlink_to(outside)
        report = ok_json(path, "check", "--repair")
        assert [(i["path"], i["repaired"]) for i in report["issues"]] == [(str(link), True)]
        assert "symbolic link" in report["issues"][0]["problem"]
        assert ok(path, "check").stdout.endswith(": ok\n")
