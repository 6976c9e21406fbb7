"""Import refuses files that decompress to far more than they weigh, with bounded memory."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
import zstandard

from convstore import ImportFormatError, ImportTooLarge, InvalidContent, Store
from convstore.importers import import_files, read_plan

from .conftest import ROOT

CHATGPT = Path(__file__).parent / "fixtures" / "import" / "chatgpt_branches.json"
MIB = 1024 * 1024
CLI = "from convstore.cli import main; main()"


def write_bomb(path: Path, mib: int, *, declared: int | None = None) -> None:
    """A zip whose conversations.json is ``mib`` MiB of spaces (valid JSON whitespace),
    deflated about 1000 to 1. Built from one deflated MiB repeated (each block ends with a full
    flush, so copies concatenate into one valid stream): seconds, not minutes, to make.
    ``declared`` is the uncompressed size written in the headers (a lie, when given)."""
    chunk = b" " * MIB
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    csize = len(block) * mib + len(final)
    usize = mib * MIB if declared is None else declared
    name = b"conversations.json"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, csize, usize, 18, 0))
        fh.write(name)
        for _ in range(mib):
            fh.write(block)
        fh.write(final)
        cd_offset = fh.tell()
        central = struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, csize, usize, 18, 0, 0, 0, 0,
            0, 0,
        )  # fmt: skip
        fh.write(central + name)
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + 18, cd_offset, 0))


def peak_rss_of_import(store: Path, *args: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run ``convstore import`` in a child of a fresh interpreter; return the child's peak RSS
    in bytes (getrusage(RUSAGE_CHILDREN) of that interpreter sees only this one child)."""
    code = (
        "import resource, subprocess, sys\n"
        f"r = subprocess.run([sys.executable, '-c', {CLI!r}, '--store', sys.argv[1], 'import',"
        " *sys.argv[2:]], capture_output=True, text=True)\n"
        "sys.stderr.write(r.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(store), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    kib, rc = done.stdout.split()
    return int(kib) * 1024, subprocess.CompletedProcess(done.args, int(rc), "", done.stderr)


class TestZipBombs:
    @pytest.mark.parametrize("mib", [1000, 4000])
    def test_a_zip_bomb_is_refused_with_bounded_memory_and_nothing_written(
        self, tmp_path: Path, mib: int
    ) -> None:
        bomb = tmp_path / "export.zip"
        write_bomb(bomb, mib)
        assert bomb.stat().st_size < mib * MIB / 500
        store = tmp_path / "store"
        peak, done = peak_rss_of_import(store, str(bomb))
        assert done.returncode == 1
        assert done.stderr.startswith(f"error: {bomb}:conversations.json: ")
        assert "more than 100 to 1, the limit: a zip bomb?" in done.stderr
        assert "--max-ratio" in done.stderr
        assert "Traceback" not in done.stderr
        # Far below the GBs the bomb holds: the interpreter with convstore loaded is ~100 MB.
        assert peak < 400 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
        assert not store.exists()

    def test_a_zip_that_declares_a_small_size_is_read_by_what_it_holds(
        self, tmp_path: Path
    ) -> None:
        bomb = tmp_path / "export.zip"
        write_bomb(bomb, 200, declared=1000)
        with pytest.raises(ImportFormatError) as e:
            read_plan(bomb)
        assert str(e.value).startswith(f"{bomb}: the zip is damaged")

    def test_a_zip_that_declares_a_huge_size_is_refused_by_its_ratio(self, tmp_path: Path) -> None:
        bomb = tmp_path / "export.zip"
        write_bomb(bomb, 200, declared=2**32 - 1)
        with pytest.raises(ImportTooLarge, match="more than 100 to 1"):
            read_plan(bomb)

    def test_the_ratio_limit_can_be_raised_for_a_genuine_file(self, tmp_path: Path) -> None:
        bomb = tmp_path / "export.zip"
        write_bomb(bomb, 20)
        with pytest.raises(ImportTooLarge, match="more than 100 to 1"):
            read_plan(bomb)
        # Raised, the spaces are read whole and found to be no export at all.
        with pytest.raises(ImportFormatError, match="not valid JSON"):
            read_plan(bomb, max_ratio=10_000)


class TestSizeLimit:
    def test_a_zipped_export_larger_than_max_bytes_is_refused_naming_the_member(
        self, tmp_path: Path, store: Store
    ) -> None:
        archive = tmp_path / "chatgpt-export.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(CHATGPT, "conversations.json")
        size = CHATGPT.stat().st_size
        with pytest.raises(ImportTooLarge) as e:
            import_files(store, [archive], max_bytes=size - 1)
        assert str(e.value) == (
            f"{archive}:conversations.json: holds more than {size - 1:,} bytes, the import "
            "limit; if the file is genuine, raise it with --max-size (max_bytes= in Python); "
            "nothing was imported"
        )
        assert store.session_ids() == []
        assert import_files(store, [archive], max_bytes=size).sessions_added == 5

    def test_a_plain_file_larger_than_max_bytes_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ImportTooLarge, match="holds more than 1,000 bytes"):
            read_plan(CHATGPT, max_bytes=1000)

    def test_an_endless_file_is_refused_after_max_bytes(self) -> None:
        with pytest.raises(ImportTooLarge, match="/dev/zero: holds more than 1,048,576 bytes"):
            read_plan("/dev/zero", max_bytes=MIB)

    def test_the_cli_takes_the_limits_as_options(self, tmp_path: Path) -> None:
        store = tmp_path / "store"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        base = [sys.executable, "-c", CLI, "--store", str(store), "import", str(CHATGPT)]
        small = subprocess.run(
            [*base, "--max-size", "1K"], capture_output=True, text=True, env=env, check=False
        )
        assert small.returncode == 1
        assert small.stderr == (
            f"error: {CHATGPT}: holds more than 1,024 bytes, the import limit; if the file is "
            "genuine, raise it with --max-size (max_bytes= in Python); nothing was imported\n"
        )
        assert not store.exists()
        bad = subprocess.run(
            [*base, "--max-size", "lots"], capture_output=True, text=True, env=env, check=False
        )
        assert bad.returncode == 2
        assert "'lots' is not a size" in bad.stderr
        ok = subprocess.run(
            [*base, "--max-size", "10M", "--max-ratio", "50"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert ok.returncode == 0, ok.stderr
        assert "Added 5 sessions" in ok.stdout


SEGMENT_BOMB = """
import sys
from convstore import ConvstoreError, Store
with Store(sys.argv[1]) as s:
    try:
        print("read", [m.content for m in s.session("notes").messages()])
    except ConvstoreError as e:
        print(type(e).__name__, str(e).replace(chr(10), " "))
    print("; ".join(str(i) for i in s.check().issues))
# VmHWM is this program's own peak: ru_maxrss would also count the memory of the process it
# was forked from (Linux keeps the larger of the two across exec), here the test runner.
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


class TestSegmentBombs:
    def test_a_hot_segment_that_inflates_to_gigabytes_is_damage_not_memory(
        self, store_path: Path
    ) -> None:
        with Store(store_path) as s:
            s.create_session("notes").append("user", "hi")
        # Another clone's segment, as a pull brings it: one frame of 1 GiB of spaces (a few
        # KB compressed), framed exactly as a writer frames it.
        cctx = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=True)
        co = cctx.compressobj(size=1024 * MIB)
        data = b"".join(co.compress(b" " * MIB) for _ in range(1024)) + co.flush()
        head = struct.pack("<IIIII", 0x184D2A5C, 12, len(data), zlib.crc32(data), 0)
        head = head[:16] + struct.pack("<I", zlib.crc32(head[:12]))
        segment = store_path / "sessions" / "notes" / "hot.0123456789ab.000001.jsonl.zst"
        segment.write_bytes(head + data)
        segment.chmod(0o600)  # as a clone's segment is after `convstore sync`
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", SEGMENT_BOMB, str(store_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        read, issues, peak = done.stdout.splitlines()
        assert read == "read ['hi']"  # the damaged frame is skipped, as a corrupt one is
        assert issues.startswith(
            f"{segment} @0: damaged frame: zstd: the frame declares 1,073,741,824 bytes "
        )
        assert (
            "more than a frame may inflate to (100 times its size, or 33,554,432 bytes)"
        ) in issues
        assert int(peak) * 1024 < 400 * MIB, f"peak RSS {int(peak) / 1024:.0f} MiB"

    def test_a_writer_never_writes_a_frame_that_readers_would_refuse(self, store: Store) -> None:
        session = store.create_session("big")
        before = list((store.path / "sessions" / "big").iterdir())
        sizes = [f.stat().st_size for f in before]
        text = "a" * (12 * MIB)  # compresses about 30,000 times
        with pytest.raises(InvalidContent) as e:
            session.extend([{"role": "user", "content": text}] * 3)
        assert str(e.value).startswith("these 3 records make 37,7")
        assert str(e.value).endswith(
            "bytes that compress over 100 times; append them in smaller batches; nothing was "
            "written"
        )
        assert [f.stat().st_size for f in before] == sizes
        session.extend([{"role": "user", "content": text}] * 2)  # 24 MiB: under the 32 MiB floor
        assert [len(m.content) for m in Store(store.path).session("big").messages()] == [
            12 * MIB,
            12 * MIB,
        ]
