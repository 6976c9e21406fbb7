"""The on-disk format: layout, framing, readability without convstore, damage and repair."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from convstore import Store
from convstore.frames import HEADER_SIZE, encode_frame, new_compressor, scan


def torn_frame(length: int) -> bytes:
    """The first ``length`` bytes of a real frame: what a writer killed mid-append leaves."""
    return encode_frame(b'{"id":"x"}\n' * 50, new_compressor())[:length]


def hot_files(store: Store, sid: str) -> list[Path]:
    return sorted(store._session_folder(sid).glob("hot.*.jsonl.zst"))


class TestLayout:
    def test_a_new_store_has_its_marker_gitignore_and_gitattributes(self, store: Store) -> None:
        assert json.loads((store.path / "convstore.json").read_text()) == {
            "format": "convstore",
            "version": 2,
        }
        assert "/.cache/" in (store.path / ".gitignore").read_text()
        assert "*.zst binary" in (store.path / ".gitattributes").read_text()

    def test_a_session_is_one_folder_with_one_hot_segment_per_writer(self, store: Store) -> None:
        s = store.create_session("s1")
        s.append("user", "x")
        files = hot_files(store, "s1")
        assert [f.name for f in files] == [f"hot.{store.writer_id}.000001.jsonl.zst"]

    def test_each_append_call_is_one_frame(self, store: Store) -> None:
        s = store.create_session("s1")
        s.append("user", "a")
        s.extend([{"role": "user", "content": str(i)} for i in range(10)])
        result = scan(hot_files(store, "s1")[0].read_bytes())
        assert len(result.frames) == 3 and not result.damage  # session record, append, extend

    def test_segments_roll_over_at_the_configured_size(self, store_path: Path) -> None:
        with Store(store_path, roll_bytes=4096, auto_compact=False) as st:
            s = st.create_session("s")
            for i in range(200):
                s.append("user", f"message {i} " * 10)
            assert len(hot_files(st, "s")) > 3
            assert [m.text for m in s.messages()] == [f"message {i} " * 10 for i in range(200)]


class TestReadableWithoutConvstore:
    def test_duckdb_reads_the_hot_segments_as_json_lines(self, store: Store) -> None:
        s = store.create_session("s1")
        for i in range(5):
            s.append("user", f"hello {i}")
        rel = duckdb.sql(
            f"SELECT content FROM read_json('{store.path}/sessions/*/hot.*.jsonl.zst', "
            "compression='zstd', format='newline_delimited') WHERE kind = 'message' ORDER BY id"
        )
        assert rel is not None
        rows = rel.fetchall()
        assert [r[0] for r in rows] == [f"hello {i}" for i in range(5)]

    @pytest.mark.skipif(shutil.which("zstdcat") is None, reason="zstdcat is not installed")
    def test_zstdcat_prints_the_records(self, store: Store) -> None:
        store.create_session("s1").append("user", "plain text")
        out = subprocess.run(
            ["zstdcat", str(hot_files(store, "s1")[0])], capture_output=True, check=True
        ).stdout
        lines = [json.loads(x) for x in out.splitlines()]
        assert lines[-1]["content"] == "plain text"


class TestDamage:
    def fill(self, store: Store, n: int = 10) -> Path:
        s = store.create_session("s")
        for i in range(n):
            s.append("user", f"m{i}")
        return hot_files(store, "s")[0]

    def test_a_torn_tail_hides_nothing_before_it_and_is_repaired(
        self, store: Store, store_path: Path
    ) -> None:
        path = self.fill(store)
        with open(path, "ab") as fh:
            fh.write(torn_frame(10))  # half a header: a writer killed mid-write
        with Store(store_path) as fresh:
            assert [m.text for m in fresh.session("s").messages()] == [f"m{i}" for i in range(10)]
            report = fresh.check()
            assert not report.ok and "torn tail" in str(report)
            assert fresh.check(repair=True).ok
            assert fresh.check().ok

    def test_the_next_writer_truncates_a_torn_tail_and_appends(
        self, store: Store, store_path: Path
    ) -> None:
        path = self.fill(store)
        size = path.stat().st_size
        with open(path, "ab") as fh:
            fh.write(torn_frame(HEADER_SIZE + 3))  # a whole header, a few bytes of the frame
        with Store(store_path) as fresh:
            fresh.session("s").append("user", "after the crash")
            texts = [m.text for m in fresh.session("s").messages()]
            assert texts == [f"m{i}" for i in range(10)] + ["after the crash"]
            assert fresh.check().ok
        assert path.stat().st_size > size

    def test_a_flipped_bit_is_reported_and_later_records_stay_readable(
        self, store: Store, store_path: Path
    ) -> None:
        path = self.fill(store)
        data = bytearray(path.read_bytes())
        frames = scan(bytes(data)).frames
        victim = frames[4]  # the frame of message m3
        data[victim[0] + HEADER_SIZE + 5] ^= 0x04
        path.write_bytes(bytes(data))
        with Store(store_path) as fresh:
            texts = [m.text for m in fresh.session("s").messages()]
            assert texts == [f"m{i}" for i in range(10) if i != 3]
            report = fresh.check()
            assert not report.ok and "checksum mismatch" in str(report)
            fresh.session("s").append("user", "still writable")
            assert fresh.session("s").recent(1)[0].text == "still writable"

    def test_a_flipped_length_in_the_last_frame_is_damage_not_a_torn_tail(
        self, store: Store, store_path: Path
    ) -> None:
        path = self.fill(store)
        data = bytearray(path.read_bytes())
        last = scan(bytes(data)).frames[-1][0]
        data[last + 10] ^= 0x40  # frame_len grows past the end of the file
        path.write_bytes(bytes(data))
        with Store(store_path) as fresh:
            report = fresh.check(repair=True)
            assert "header checksum mismatch" in str(report) and not report.ok
            assert path.stat().st_size == len(data)  # nothing truncated: the bytes are kept

    def test_garbage_in_a_segment_is_reported(self, store: Store, store_path: Path) -> None:
        path = self.fill(store)
        with open(path, "r+b") as fh:
            fh.seek(40)
            fh.write(os.urandom(64))
        with Store(store_path) as fresh:
            assert not fresh.check().ok
            assert len(fresh.session("s").messages()) >= 8

    def test_a_record_in_the_wrong_session_folder_is_reported(self, store: Store) -> None:
        self.fill(store, 2)
        other = store.create_session("other")
        other.append("user", "x")
        shutil.copy(hot_files(store, "s")[0], other.path / "hot.abcdef012345.000001.jsonl.zst")
        assert "belongs to session 's'" in str(store.check())

    def test_an_unknown_file_in_a_session_folder_is_reported(self, store: Store) -> None:
        self.fill(store, 1)
        (store._session_folder("s") / "notes.txt").write_text("hi")
        assert "unknown file" in str(store.check())
