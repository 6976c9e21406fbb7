"""check() beside live maintenance, and what check can know of segments that are missing.

check takes no lock to read (it must never stop a compaction or a writer): a file that a
compaction deletes while check reads it makes check read the session again, and a temporary
file a live compaction is writing is never reported nor removed (repair removes one only under
the compaction lock, which every compaction holds while it writes)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from convstore import Store
from convstore.frames import END_MARKER, encode_frame, new_compressor
from convstore.ids import format_us, new_id, now_us
from convstore.records import encode_record

from .conftest import start_python

SESSIONS = 6

APPEND_LOOP = """
import json, os, sys
from convstore import Store
path, stop = sys.argv[1], sys.argv[2]
n = 0
with Store(path, sync="close") as s:
    while not os.path.exists(stop):
        s.session(f"s{n % 6}").extend(
            {"role": "user", "content": f"more {n} {j} " + "w" * 300} for j in range(25)
        )
        s.flush()
        n += 1
print(json.dumps(n * 25))
"""

COMPACT_LOOP = """
import json, os, sys
from convstore import Store
path, stop = sys.argv[1], sys.argv[2]
problems, rounds = [], 0
with Store(path, auto_compact=False) as s:
    while not os.path.exists(stop):
        problems += [str(p.skipped) for p in s.compact().problems]
        rounds += 1
print(json.dumps({"problems": problems, "rounds": rounds}))
"""


def _messages(path: Path) -> int:
    with Store(path) as s:
        return sum(len(s.session(f"s{i}").messages()) for i in range(SESSIONS))


class TestBesideACompaction:
    def test_check_and_repair_beside_a_compaction_in_a_loop_find_nothing_and_remove_nothing(
        self, store_path: Path, tmp_path: Path
    ) -> None:
        with Store(store_path, auto_compact=False) as s:
            for i in range(SESSIONS):
                s.create_session(f"s{i}").extend(
                    {"role": "user", "content": f"first {i} {j} " + "v" * 300} for j in range(300)
                )
        stop = tmp_path / "stop"
        procs = [
            start_python(code, str(store_path), str(stop), stdout=subprocess.PIPE)
            for code in (COMPACT_LOOP, APPEND_LOOP)
        ]
        reports: list[str] = []
        errors: list[str] = []
        checks = 0
        try:
            deadline = time.monotonic() + 25
            with Store(store_path, auto_compact=False) as s:
                while time.monotonic() < deadline:
                    try:
                        report = s.check(repair=checks % 2 == 1)
                    except Exception as e:  # the defect under test: check raising mid-race
                        errors.append(f"{type(e).__name__}: {e}")
                    else:
                        if not report.ok:
                            reports.append(str(report))
                    checks += 1
        finally:
            stop.touch()
            outs = [p.communicate(timeout=120)[0] for p in procs]
        compacted = json.loads(outs[0])
        appended = json.loads(outs[1])
        assert [p.returncode for p in procs] == [0, 0]
        assert errors == []
        assert reports == []
        assert compacted["problems"] == []  # no temporary file was taken from under it
        assert compacted["rounds"] > 1 and checks > 1
        assert _messages(store_path) == SESSIONS * 300 + appended
        with Store(store_path) as s:
            final = s.check()
        assert final.ok, str(final)


WRITER_OTHER = "0badc0ffee00"


def rolled(store_path: Path, segments: int) -> tuple[Store, Path]:
    """A store whose writer has written ``segments`` segments of session s (all but the
    newest closed by an end marker)."""
    s = Store(store_path, roll_bytes=1, auto_compact=False)
    sess = s.create_session("s")
    for i in range(segments - 2):  # creating the session rolled once already
        sess.append("user", f"message {i}")
    return s, sess.path


def own(folder: Path, writer: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f"hot.{writer}."))


class TestMissingSegments:
    def test_a_missing_newest_segment_of_this_clones_writer_is_reported(
        self, store_path: Path
    ) -> None:
        s, folder = rolled(store_path, 3)
        with s:
            names = own(folder, s.writer_id)
            assert len(names) == 3
            assert s.check().ok
            (folder / names[-1]).unlink()
            report = s.check()
        assert not report.ok
        (issue,) = report.issues
        assert issue.path == str(folder / names[-1]) and "missing" in issue.problem

    def test_a_gap_in_this_clones_segments_is_reported(self, store_path: Path) -> None:
        s, folder = rolled(store_path, 4)
        with s:
            names = own(folder, s.writer_id)
            (folder / names[1]).unlink()
            report = s.check()
        (issue,) = report.issues
        assert issue.path == str(folder / names[1]) and "missing" in issue.problem

    def test_the_only_segment_this_process_wrote_missing_is_reported(
        self, store_path: Path
    ) -> None:
        with Store(store_path, auto_compact=False) as s:
            sess = s.create_session("s")
            (only,) = own(sess.path, s.writer_id)
            (sess.path / only).unlink()
            report = s.check()
        (issue,) = report.issues
        assert issue.path == str(sess.path / only) and "missing" in issue.problem

    def test_another_clones_segments_that_are_gone_are_not_reported(self, store_path: Path) -> None:
        # Another clone's newest segment may be gone for good reasons this clone cannot see
        # (its owner sealed it and a pull brought the deletion), so only gaps and ends of this
        # clone's own writer are checked.
        with Store(store_path, auto_compact=False) as s:
            sess = s.create_session("s")
            stamp = now_us()
            record = {
                "id": new_id(stamp),
                "kind": "message",
                "session": "s",
                "created_at": format_us(stamp),
                "role": "user",
                "content": "from afar",
            }
            frame = encode_frame(encode_record(record), new_compressor())
            for seq, data in (("000003", frame + END_MARKER), ("000007", b"")):
                path = sess.path / f"hot.{WRITER_OTHER}.{seq}.jsonl.zst"
                path.write_bytes(data)
                path.chmod(0o600)  # as convstore makes it: a loose mode is a problem of its own
            report = s.check()
        assert report.ok, str(report)

    def test_a_compacted_session_checks_ok(self, store_path: Path) -> None:
        s, folder = rolled(store_path, 4)
        with s:
            s.compact()
            report = s.check()
            assert [n for n in own(folder, s.writer_id)]
        assert report.ok, str(report)


@pytest.mark.parametrize("repair", [False, True])
def test_a_leftover_temporary_file_with_no_compaction_running_is_reported(
    store_path: Path, repair: bool
) -> None:
    with Store(store_path) as s:
        folder = s.create_session("s").path
        tmp = folder / ".sealing.0123456789ab.tmp"
        tmp.write_bytes(b"half a parquet file")
        tmp.chmod(0o600)
        report = s.check(repair=repair)
    (issue,) = report.issues
    assert "leftover temporary file" in issue.problem and issue.repaired == repair
    assert tmp.exists() != repair
