"""A failure of the query layer (a full disk, a read-only or damaged cache) is a ConvstoreError
that says what to do, leaves nothing half-applied, and the next call recovers once the cause is
gone. Real file systems: a small tmpfs that fills up, a read-only bind mount (tests run as root,
where chmod does not stop a write)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from convstore import CacheError, ConvstoreError, Store
from convstore.frames import END_MARKER, encode_frame, new_compressor
from convstore.ids import format_us, new_id, now_us
from convstore.records import encode_record


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}): needs root and mount(8)")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MB tmpfs of its own, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    _mount("-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        _umount(mnt)


def fill(disk: Path) -> Path:
    """Fill the file system with one file until it refuses; delete the file to free it."""
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        block = b"\0" * (1 << 16)
        try:
            while True:
                fh.write(block)
                fh.flush()
        except OSError:
            pass
    return filler


def write(store: Store, word: str, sessions: int = 4, each: int = 60) -> None:
    for i in range(sessions):
        sid = f"s{i}"
        sess = store.session(sid) if sid in store else store.create_session(sid, title=f"t{i}")
        sess.extend(
            {"role": "user", "content": f"{word} {i} {j} " + "x" * 200} for j in range(each)
        )
    store.flush()


def answers(store: Store) -> tuple[object, ...]:
    return (
        store.sql("SELECT session_id, count(*) FROM messages GROUP BY 1 ORDER BY 1").rows,
        len(store.search("kiwi", limit=1000)),
        len(store.search("mango", limit=1000)),
        store.stats().to_dict()["messages_by_role"],
    )


def every_call_fails_cleanly(store: Store) -> list[str]:
    """Each query call either answers or raises a ConvstoreError (never anything else)."""
    messages = []
    calls = (
        store.refresh,
        lambda: store.sql("SELECT count(*) FROM messages"),
        lambda: store.search("mango"),
        store.stats,
        store.refresh,
    )
    for call in calls:
        try:
            call()
        except ConvstoreError as e:
            messages.append(str(e))
    return messages


class TestAFullDisk:
    def test_a_full_disk_at_the_first_build_is_a_cache_error_until_space_returns(
        self, small_disk: Path
    ) -> None:
        with Store(small_disk / "store") as s:
            write(s, "kiwi")
            write(s, "mango")
            filler = fill(small_disk)
            errors = every_call_fails_cleanly(s)
            assert errors, "a build on a full disk cannot succeed"
            for message in errors:
                assert "free space" in message, message
            with pytest.raises(CacheError, match=r"^the catalog could not be refreshed: .*space"):
                s.refresh()
            filler.unlink()
            s.refresh()
            assert answers(s) == (
                [("s0", 120), ("s1", 120), ("s2", 120), ("s3", 120)],
                240,
                240,
                {"user": 480},
            )

    def test_a_refresh_that_fails_on_a_full_disk_leaves_nothing_half_applied(
        self, small_disk: Path
    ) -> None:
        path = small_disk / "store"
        with Store(path) as s:
            write(s, "kiwi")
            s.refresh()
            before = answers(s)
            write(s, "mango")
            filler = fill(small_disk)
            for message in every_call_fails_cleanly(s):
                assert "free space" in message, message
            filler.unlink()
            s.refresh()
            after = answers(s)
        assert before[0] == [("s0", 60), ("s1", 60), ("s2", 60), ("s3", 60)]
        # The same answers as a cache built from scratch: no message twice in the index, none
        # missing from the catalog.
        shutil.rmtree(path / ".cache")
        with Store(path) as fresh:
            assert answers(fresh) == after
        assert after[1:3] == (240, 240)


class TestAnUnwritableCache:
    def test_a_read_only_cache_folder_is_a_cache_error_until_it_is_writable_again(
        self, store_path: Path
    ) -> None:
        with Store(store_path) as s:
            write(s, "kiwi")
            s.refresh()
            write(s, "mango")
            cache = store_path / ".cache"
            _mount("--bind", str(cache), str(cache))
            try:
                _mount("-o", "remount,bind,ro", str(cache))
                errors = every_call_fails_cleanly(s)
                assert errors
                for message in errors:
                    assert "writable" in message, message
            finally:
                _umount(cache)
            s.refresh()
            assert answers(s)[1:3] == (240, 240)


class TestADamagedCache:
    def test_cache_files_garbled_under_a_live_process_give_answers_or_a_clear_error(
        self, store_path: Path
    ) -> None:
        with Store(store_path) as s:
            write(s, "kiwi")
            write(s, "mango")
            s.refresh()
            expected = answers(s)
            for folder in (store_path / ".cache" / "catalog", store_path / ".cache" / "index"):
                for f in folder.rglob("*"):
                    if f.is_file() and f.stat().st_size and not f.name.endswith(".lock"):
                        f.write_bytes(os.urandom(max(64, f.stat().st_size // 4)))
            write(s, "kiwi", sessions=1, each=1)
            every_call_fails_cleanly(s)
            s.refresh()
            got = answers(s)
        assert got == (
            [("s0", 121), ("s1", 120), ("s2", 120), ("s3", 120)],
            241,
            240,
            {"user": 481},
        )
        assert expected[1:3] == (240, 240)


OTHER_CLONE = "0badc0ffee00"  # another clone's writer id, as a git pull brings it in


def raw_record(kind: str, sid: str, **fields: Any) -> dict[str, Any]:
    stamp = now_us()
    return {
        "id": new_id(stamp),
        "kind": kind,
        "session": sid,
        "created_at": format_us(stamp),
        **fields,
    }


MALFORMED: dict[str, Callable[[str], dict[str, Any]]] = {
    "a message without a role": lambda sid: raw_record("message", sid, content="hi"),
    "a message whose content is a number": lambda sid: raw_record(
        "message", sid, role="user", content=5
    ),
    "an edit without content": lambda sid: raw_record("edit", sid, target="x"),
    "a checkpoint deletion whose ids are a number": lambda sid: raw_record(
        "cp_delete", sid, checkpoint_ids=5
    ),
    "a message whose edited_at is not a time": lambda sid: raw_record(
        "message", sid, role="user", content="hi", edit_id="y", edited_at="later"
    ),
}


class TestAMalformedRecord:
    @pytest.mark.parametrize("bad", sorted(MALFORMED))
    def test_a_malformed_record_in_a_closed_segment_of_ours_stops_only_its_session(
        self, store: Store, bad: str
    ) -> None:
        # More sessions than one locked batch of a whole-store compaction (64), the bad one
        # first: a failure that escaped its session used to skip every later batch.
        sids = [f"a{i:02d}" for i in range(70)]
        for sid in sids:
            store.create_session(sid).append("user", f"hello {sid}")
        folder = store.session("a00").path
        frame = encode_frame(encode_record(MALFORMED[bad]("a00")), new_compressor())
        # A closed segment of this clone's own (sequence 0: before the one it appends to).
        name = f"hot.{store.writer_id}.000000.jsonl.zst"
        (folder / name).write_bytes(frame + END_MARKER)
        (folder / name).chmod(0o600)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        report = store.compact()
        (problem,) = report.problems
        assert problem.session_id == "a00"
        assert problem.skipped is not None and "a record is malformed" in problem.skipped
        assert sorted(s.session_id for s in report.compacted) == sids[1:]
        # Left as it is (nothing sealed or deleted), for check to report.
        after = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert after[name] == before[name]
        assert not [n for n in after if n.startswith("sealed.")]
        issues = [i for i in store.check().issues if name in i.path]
        assert len(issues) == 1 and "record" in issues[0].problem
        assert [m.content for m in store.session("a00").messages()] == ["hello a00"]

    @pytest.mark.parametrize("bad", sorted(MALFORMED))
    def test_a_malformed_record_in_another_clones_segment_is_skipped_and_reported(
        self, store: Store, bad: str
    ) -> None:
        sids = [f"a{i:02d}" for i in range(3)]
        for sid in sids:
            store.create_session(sid).append("user", f"hello {sid}")
        folder = store.session("a00").path
        frame = encode_frame(encode_record(MALFORMED[bad]("a00")), new_compressor())
        other = folder / f"hot.{OTHER_CLONE}.000001.jsonl.zst"
        other.write_bytes(frame + END_MARKER)
        other.chmod(0o600)
        report = store.compact()
        # Another clone's file is read as context and never touched: readers skip the bad
        # record, so compaction does too, and check reports it for its owner to restore.
        assert not report.problems
        assert sorted(s.session_id for s in report.compacted) == sids
        assert other.read_bytes() == frame + END_MARKER
        issues = [i for i in store.check().issues if OTHER_CLONE in i.path]
        assert len(issues) == 1 and "record" in issues[0].problem
        assert [m.content for m in store.session("a00").messages()] == ["hello a00"]
