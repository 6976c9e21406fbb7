"""A refresh after a compaction in this clone takes the compaction's note instead of reading
the compacted sessions again, and ends with the catalog a rebuild from the files would give."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from convstore import Store
from convstore import catalog as catalog_module
from convstore.compaction import wait_for_background
from convstore.ingest import FilePos, FolderPos, reseal
from convstore.sealnotes import InputFile, SealNote, notes_dir, read_notes

from .conftest import run_python

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
SESSIONS = 6

COMPACT = """
import sys
from convstore import Store
from convstore.compaction import wait_for_background
from convstore.compaction import compact
with Store(sys.argv[1]) as s:
    report = compact(s)
    print(sum(1 for r in report.sessions if r.sealed))
"""

APPEND = """
import sys
from convstore import Store
from convstore.compaction import wait_for_background
with Store(sys.argv[1]) as s:
    s.session(sys.argv[2]).append("user", sys.argv[3])
"""


def fill(path: Path, sessions: int = SESSIONS, messages: int = 30) -> None:
    """Sessions with metadata, an edit, a delete and a state each, read by a refresh."""
    with Store(path, auto_compact=False) as s:
        for i in range(sessions):
            sess = s.create_session(f"chat-{i}", title=f"chat {i}", user_id=f"u{i % 2}")
            msgs = sess.extend(
                {
                    "role": "user" if j % 2 == 0 else "assistant",
                    "content": f"message {j} of chat {i} about topic{j % 5}",
                    "metadata": {"model": "m1", "usage": {"input_tokens": j}} if j % 2 else {},
                    "created_at": T0 + timedelta(days=i, minutes=j),
                }
                for j in range(messages)
            )
            sess.edit(msgs[3].id, f"edited three of chat {i}")
            sess.delete_message(msgs[4].id)
            sess.save_state({"step": i})
        s.refresh()


def compact_elsewhere(path: Path) -> int:
    done = run_python(COMPACT, str(path))
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def snapshot(s: Store) -> dict[str, list[str]]:
    """Every public table as JSON rows, in a fixed order."""
    out = {}
    for table, order in (("messages", "id"), ("sessions", "id"), ("files", "session_id, name")):
        out[table] = [
            str(r[0]) for r in s.sql(f"SELECT to_json(t) FROM {table} t ORDER BY {order}").rows
        ]
    return out


def rebuilt_snapshot(path: Path) -> dict[str, list[str]]:
    """The tables a cache built from nothing gives (the writer id is kept)."""
    for part in ("catalog", "index"):
        shutil.rmtree(path / ".cache" / part)
    with Store(path) as s:
        s.refresh()
        assert s._query_layer().resealed == 0
        return snapshot(s)


class TestRefreshAfterCompaction:
    def test_reads_no_compacted_session_again_and_matches_a_rebuild(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path)
        assert compact_elsewhere(path) == SESSIONS
        assert len(read_notes(path).by_session) == SESSIONS
        with Store(path) as s:
            s.refresh()
            assert s._query_layer().resealed == SESSIONS
            got = snapshot(s)
            assert s.search("topic3")  # the index is still whole
        assert not list(notes_dir(path).iterdir()), "notes that have served are deleted"
        files = [f for f in got["files"] if '"kind":"sealed"' in f]
        assert len(files) == SESSIONS
        assert got == rebuilt_snapshot(path)

    def test_the_text_of_a_message_deleted_before_compaction_leaves_the_cache(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path)
        with Store(path) as s:
            gone = s.session("chat-2").messages()[5]
            s.session("chat-2").delete_message(gone.id)
            s.refresh()
            assert gone.id not in {h.message_id for h in s.search('"message 5 of chat 2"')}
        compact_elsewhere(path)
        with Store(path) as s:
            s.refresh()
            assert s._query_layer().resealed == SESSIONS
            assert gone.id not in {h.message_id for h in s.search('"message 5 of chat 2"')}
            assert s.sql("SELECT count(*) FROM messages WHERE id = ?", [gone.id]).scalar() == 0

    def test_an_append_after_the_compaction_is_read_and_the_rest_still_skipped(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path)
        compact_elsewhere(path)
        done = run_python(APPEND, str(path), "chat-1", "written after sealing zebra")
        assert done.returncode == 0, done.stderr
        with Store(path) as s:
            s.refresh()
            assert s._query_layer().resealed == SESSIONS - 1
            assert [h.session_id for h in s.search("zebra")] == ["chat-1"]
            got = snapshot(s)
        assert got == rebuilt_snapshot(path)

    def test_a_long_lived_process_takes_note_after_note(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path)
        # No compaction of its own: the first append after another process sealed a segment
        # counts as a roll, and would start one in the background at an unknown moment.
        with Store(path, auto_compact=False) as s:
            for round in range(2):
                for i in range(SESSIONS):
                    s.session(f"chat-{i}").append("user", f"round {round} of {i} quagga")
                s.refresh()  # read, so what the compaction seals next was read in full
                compact_elsewhere(path)
                s.refresh()
                assert s._query_layer().resealed == SESSIONS * (round + 1)
            assert len(s.search("quagga")) == 2 * SESSIONS
            got = snapshot(s)
        assert got == rebuilt_snapshot(path)

    def test_compactions_of_its_own_in_the_background_keep_the_catalog_true(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path)
        # Small segments: the appends of each round roll them, which seals in the background
        # while this process refreshes and another one compacts.
        with Store(path, roll_bytes=1024) as s:
            for round in range(3):
                for i in range(SESSIONS):
                    s.session(f"chat-{i}").extend(
                        {"role": "user", "content": f"round {round} of {i} part {j} quagga"}
                        for j in range(12)
                    )
                    s.refresh()
                compact_elsewhere(path)
            wait_for_background(s)
            s.refresh()
            assert len(s.search("quagga", limit=1000)) == 3 * SESSIONS * 12
            got = snapshot(s)
        assert got == rebuilt_snapshot(path)

    def test_a_note_whose_sealed_file_was_sealed_again_explains_its_successor(
        self, tmp_path: Path
    ) -> None:
        folder = tmp_path / "chat-0"
        folder.mkdir()
        hot = "hot.abcdefgh.000001.jsonl.zst"
        first = "sealed." + "1" * 64 + ".parquet"
        second = folder / ("sealed." + "2" * 64 + ".parquet")
        second.write_bytes(b"x" * 10)
        ino = second.stat().st_ino
        pos = FolderPos(0, 0, {hot: FilePos("hot", 108, 100, 50, 3, False, 7)})
        notes = {
            first: SealNote("chat-0", first, 20, 8, 40, 3, {hot: InputFile("hot", 108, 7)}),
            second.name: SealNote(
                "chat-0", second.name, 10, ino, 40, 3, {first: InputFile("sealed", 20, 8)}
            ),
        }
        after = reseal(str(folder), pos, notes)
        assert after is not None
        assert after.files == {second.name: FilePos("sealed", 10, 10, 40, 3, True, ino)}
        # Without the first note, the second explains nothing.
        assert reseal(str(folder), pos, {second.name: notes[second.name]}) is None
        # Nor when the hot segment was not read to its end (nor to its end marker).
        short = FolderPos(0, 0, {hot: FilePos("hot", 90, 90, 50, 3, False, 7)})
        assert reseal(str(folder), short, notes) is None

    def test_an_input_the_catalog_had_not_read_in_full_makes_it_read_the_session(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "store"
        fill(path)
        # Appended after the catalog's last refresh: the note's input is longer than what the
        # catalog read, so the note explains nothing and the session is read again.
        done = run_python(APPEND, str(path), "chat-0", "unseen before sealing okapi")
        assert done.returncode == 0, done.stderr
        compact_elsewhere(path)
        with Store(path) as s:
            s.refresh()
            assert s._query_layer().resealed == SESSIONS - 1
            assert [h.session_id for h in s.search("okapi")] == ["chat-0"]
            got = snapshot(s)
        assert got == rebuilt_snapshot(path)

    def test_a_damaged_note_is_ignored_and_removed(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path)
        compact_elsewhere(path)
        [damaged] = notes_dir(path).iterdir()  # one file for the whole batch of sessions
        damaged.write_bytes(b'{"notes": [{"session": "chat-0", "sealed"')
        with Store(path) as s:
            s.refresh()
            assert s._query_layer().resealed == 0
            got = snapshot(s)
        assert not damaged.exists()
        assert got == rebuilt_snapshot(path)

    def test_a_process_holding_the_sessions_open_takes_the_notes_too(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path)
        with Store(path) as s:
            s.refresh()
            for i in range(SESSIONS):
                s.session(f"chat-{i}").append("user", f"held open {i}")
            s.refresh()  # the query layer now holds these sessions' views
            compact_elsewhere(path)
            s.refresh()
            assert s._query_layer().resealed == SESSIONS
            got = snapshot(s)
        assert got == rebuilt_snapshot(path)


class TestLongKeyLists:
    def test_keys_sent_to_duckdb_as_a_table_give_the_catalog_a_rebuild_gives(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A full compaction of a large store sends tens of thousands of keys at once; here
        # every list of more than one key takes that path.
        monkeypatch.setattr(catalog_module, "_BIG_LIST", 1)
        path = tmp_path / "store"
        fill(path)
        compact_elsewhere(path)
        with Store(path, auto_compact=False) as s:
            s.refresh()
            assert s._query_layer().resealed == SESSIONS
            chat = s.session("chat-1")
            chat.extend({"role": "user", "content": f"late {j} ibex"} for j in range(5))
            chat.delete_message(chat.messages()[0].id)
            s.refresh()
            assert len(s.search("ibex")) == 5
            got = snapshot(s)
        assert got == rebuilt_snapshot(path)
