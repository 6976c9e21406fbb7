"""Format 2: stores written by format 1 open and migrate; writer ids follow copies; a delete
covers what was written before it.

tests/fixtures/v1-store.tar.gz was written by convstore 0.1 (tests/fixtures/make_v1_store.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import multiclone
from convstore import Store, frames, layout

FIXTURE = Path(__file__).parent / "fixtures" / "v1-store.tar.gz"


@pytest.fixture
def v1_path(tmp_path: Path) -> Path:
    root = tmp_path / "v1"
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(root, filter="data")
    # Private, as convstore 0.1's own store would be after `check --repair` (a tar extracts
    # with the umask's modes, which check reports).
    for path in [root, *root.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    return root


def texts(store: Store, sid: str) -> list[str]:
    return [m.text for m in store.session(sid).messages()]


class TestAFormatOneStore:
    def test_reads_everything_it_held_without_writing_a_byte(self, v1_path: Path) -> None:
        marker = (v1_path / "convstore.json").read_bytes()
        with Store(v1_path) as store:
            a = texts(store, "chat-a")
            assert len(a) == 30  # 30 written, one deleted, one appended after the seal
            assert "message 3 edited" in a and "message 5 edited after the seal" in a
            assert not any(t.startswith("message 4 ") for t in a)
            assert store.session("chat-a").load_state() == {"step": 3, "notes": ["a", "b"]}
            assert store.session("chat-a").user_id == "u1"
            branch = texts(store, "chat-a-branch")
            assert branch[-1] == "only on the branch" and len(branch) == 11
            assert "doomed" not in store
            assert texts(store, "chat-c") == ["hello from format 1"]
            assert store.check().ok, str(store.check())
        assert (v1_path / "convstore.json").read_bytes() == marker

    def test_its_first_write_migrates_the_marker_to_the_same_bytes_in_every_clone(
        self, v1_path: Path, tmp_path: Path
    ) -> None:
        other = tmp_path / "other"
        shutil.copytree(v1_path, other)
        for path in (v1_path, other):
            with Store(path) as store:
                store.session("chat-c").append("user", "written by format 2")
        body = json.loads((v1_path / "convstore.json").read_text())
        assert body == {"format": "convstore", "version": 2, "migrations": ["2-owned-files"]}
        assert (v1_path / "convstore.json").read_bytes() == (other / "convstore.json").read_bytes()
        # Migrating again is a no-op.
        assert layout.migrate(v1_path) is False
        with Store(v1_path) as store:
            assert texts(store, "chat-c") == ["hello from format 1", "written by format 2"]

    def test_compaction_reads_its_unowned_sealed_file_and_never_removes_it(
        self, v1_path: Path
    ) -> None:
        folder = v1_path / "sessions" / "chat-a"
        (legacy,) = folder.glob("sealed.*")
        # The clone that wrote the store upgrades: its format 1 identity (id and inode).
        writer = next(folder.glob("hot.*")).name.split(".")[1]
        (v1_path / ".cache").mkdir()
        inode = os.stat(v1_path / ".cache").st_ino
        (v1_path / ".cache" / "writer_id").write_text(f"{writer} {inode}\n")
        with Store(v1_path) as store:
            assert store.writer_id == writer
            before = [(m.id, m.content) for m in store.session("chat-a").messages()]
            report = store.compact()
            assert not report.problems
            assert legacy.exists()
            own = [p for p in folder.glob("sealed.*") if layout.owner(p.name) == writer]
            assert len(own) == 1
            assert not any(  # its own closed segments are sealed
                frames.scan(p.read_bytes(), decompress=False).closed for p in folder.glob("hot.*")
            )
            assert [(m.id, m.content) for m in store.session("chat-a").messages()] == before
        with Store(v1_path) as fresh:
            assert [(m.id, m.content) for m in fresh.session("chat-a").messages()] == before
            assert fresh.check().ok, str(fresh.check())


class TestWriterIds:
    def test_a_format_one_writer_id_is_kept_and_records_its_place(self, store_path: Path) -> None:
        with Store(store_path) as store:
            store.create_session("s").append("user", "hi")
            writer = store.writer_id
        path = store_path / ".cache" / "writer_id"
        inode = os.stat(store_path / ".cache").st_ino
        path.write_text(f"{writer} {inode}\n")  # what format 1 wrote
        with Store(store_path) as store:
            assert store.writer_id == writer
        assert path.read_text().split()[1].startswith(f"{inode}:")

    def test_an_identity_made_on_another_device_or_machine_is_replaced(
        self, store_path: Path
    ) -> None:
        with Store(store_path) as store:
            store.create_session("s").append("user", "hi")
            writer = store.writer_id
        path = store_path / ".cache" / "writer_id"
        _, place = path.read_text().split()
        inode, dev, host = place.split(":")
        for moved in (f"{inode}:{int(dev) + 1}:{host}", f"{inode}:{dev}:{'0' * 16}"):
            path.write_text(f"{writer} {moved}\n")
            with Store(store_path) as store:
                assert store.writer_id != writer
                writer = store.writer_id

    def test_a_block_level_copy_of_the_disk_writes_under_a_new_identity(
        self, tmp_path: Path
    ) -> None:
        if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
            pytest.skip("needs root and mkfs.ext4 to make and loop-mount a file system")
        image, copy = tmp_path / "disk.img", tmp_path / "copy.img"
        first, second = tmp_path / "m1", tmp_path / "m2"
        first.mkdir()
        second.mkdir()
        subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
        mounted: list[Path] = []
        try:
            for img, where in ((image, first),):
                if subprocess.run(["mount", "-o", "loop", str(img), str(where)]).returncode:
                    pytest.skip("loop devices cannot be mounted here")
                mounted.append(where)
            with Store(first / "store") as store:
                store.create_session("s").append("user", "before the copy")
                original = store.writer_id
            folder = first / "store" / "sessions" / "s"
            before = {p.name: p.read_bytes() for p in folder.iterdir()}
            subprocess.run(["umount", str(first)], check=True)
            mounted.remove(first)
            shutil.copyfile(image, copy)  # byte for byte: same inodes, same writer_id file
            for img, where in ((image, first), (copy, second)):
                subprocess.run(["mount", "-o", "loop", str(img), str(where)], check=True)
                mounted.append(where)
            with Store(first / "store") as a, Store(second / "store") as b:
                assert a.writer_id == original  # the original keeps its identity
                assert b.writer_id != original  # the copy takes a new one before writing
                a.session("s").append("user", "on the original")
                b.session("s").append("user", "on the copy")
                # The copy changed none of the files it shares with the original (only the
                # original appends to them), so a git merge of the two cannot conflict.
                copied = second / "store" / "sessions" / "s"
                for name, data in before.items():
                    assert (copied / name).read_bytes() == data, name
                assert [m.text for m in b.session("s").messages()] == [
                    "before the copy",
                    "on the copy",
                ]
        finally:
            for where in mounted:
                subprocess.run(["umount", str(where)], check=False)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[multiclone.World]:
    with multiclone.world(tmp_path, clones=2) as w:
        yield w


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
class TestADeleteMadeOnAnotherClone:
    def test_covers_what_was_written_before_it_and_keeps_what_was_written_after(
        self, two: multiclone.World
    ) -> None:
        a, b = two.clones
        chat = a.store.create_session("chat", title="private title", user_id="u1", org_id="o1")
        chat.append("user", "written before the delete")
        for clone in (a, b, a):
            two.sync(clone, "convstore")
        a.store.delete_session("chat")
        assert "chat" not in a.store
        # B has not seen the delete: it keeps writing, and its writes are acknowledged.
        kept = b.store.session("chat").append("assistant", "written after the delete")
        for clone in (a, b, a):
            two.sync(clone, "git")
        for clone in (a, b):
            s = clone.store.session("chat")
            assert [m.text for m in s.messages()] == ["written after the delete"]
            assert s.title is None  # what the delete covered stays deleted
            assert (s.user_id, s.org_id) == ("u1", "o1")  # it stays in its owner's scope
            clone.store.refresh()
            rows = clone.store.sql("SELECT id FROM messages WHERE session_id = 'chat'").rows
            assert rows == [(kept.id,)]
            assert [h.message_id for h in clone.store.search("written")] == [kept.id]
        # Compaction on both sides keeps exactly that, and purges what the delete covered.
        for clone in (a, b):
            clone.store.compact()
            two.sync(clone, "convstore")
        for clone in (a, b):
            folder = clone.path / "sessions" / "chat"
            text = b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith("sealed"))
            assert b"written before the delete" not in text
            assert [m.text for m in clone.store.session("chat").messages()] == [
                "written after the delete"
            ]
        # A delete made after it, on either side, covers it too.
        b.store.delete_session("chat")
        for clone in (b, a):
            two.sync(clone, "convstore")
        assert "chat" not in a.store and "chat" not in b.store
