"""Short forms of the reliability campaign that CI runs (the long form: benchmarks/reliability.py).

Each test runs a campaign of ``benchmarks.reliability`` with real processes, real SIGKILLs and
real damaged files, small enough for CI, and fails with the campaign's own account of what broke.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import reliability as rel
from convstore import Store, frames


def assert_clean(tally: rel.Tally) -> None:
    assert not tally.failures, f"{len(tally.failures)} failure(s):\n" + "\n".join(
        f[:1500] for f in tally.failures[:10]
    )
    assert tally.lost == 0


class TestConcurrentLoad:
    def test_writers_readers_and_a_compactor_at_once_lose_duplicate_and_reorder_nothing(
        self, tmp_path: Path
    ) -> None:
        pytest.importorskip("convstore.compaction")
        tally = rel.concurrent_load(
            tmp_path, writers=4, appends=250, readers=2, compactor=True, refresher=False
        )
        assert_clean(tally)
        # 4 writers x 250 calls, a fifth of them extends of 3 messages
        assert tally.acknowledged >= 1000
        assert tally.counters.get("reader runs", 0) > 0
        assert tally.counters.get("compactor runs", 0) > 0

    def test_a_refresher_beside_writers_and_a_compactor_leaves_the_catalog_exact(
        self, tmp_path: Path
    ) -> None:
        pytest.importorskip("convstore.query")
        pytest.importorskip("convstore.compaction")
        tally = rel.concurrent_load(
            tmp_path, writers=3, appends=150, readers=1, compactor=True, refresher=True
        )
        assert_clean(tally)
        assert tally.counters.get("refresher runs", 0) > 0


class TestKillLoop:
    def test_writers_and_a_compactor_killed_at_random_points_lose_no_acknowledged_write(
        self, tmp_path: Path
    ) -> None:
        pytest.importorskip("convstore.compaction")
        tally = rel.kill_loop(tmp_path, rounds=8, writers=2, seed=8)
        assert_clean(tally)
        assert tally.kills >= 8 * 3
        assert tally.acknowledged > 100

    @pytest.mark.slow
    def test_hundreds_of_kills_lose_no_acknowledged_write(self, tmp_path: Path) -> None:
        pytest.importorskip("convstore.compaction")
        tally = rel.kill_loop(tmp_path, rounds=80, writers=3)
        assert_clean(tally)
        assert tally.kills >= 300


# Cutting a hot segment exactly at a frame boundary is its own test below: on the open segment
# nothing can detect it, on a closed one it is a known gap of check().
DAMAGES = tuple(d for d in rel.DAMAGES if d != "cut at a frame boundary")


class TestCorruption:
    def test_damage_to_segments_is_reported_and_never_takes_untouched_records(
        self, tmp_path: Path
    ) -> None:
        kinds = ("hot", "sealed", "marker")
        tally = rel.corruption(
            tmp_path,
            trials=len(kinds) * len(DAMAGES) * 2,
            kinds=kinds,
            damages=DAMAGES,
            cli_every=0,
        )
        assert_clean(tally)
        assert tally.corruptions >= 30
        assert tally.detected + tally.counters.get("marker damage that left it valid", 0) == (
            tally.corruptions
        )

    def test_damage_to_the_catalog_and_the_search_index_is_rebuilt(self, tmp_path: Path) -> None:
        pytest.importorskip("convstore.query")
        kinds = ("catalog", "index")
        tally = rel.corruption(
            tmp_path, trials=len(kinds) * len(DAMAGES), kinds=kinds, damages=DAMAGES, cli_every=0
        )
        assert_clean(tally)
        assert tally.corruptions > 0, "no cache file was found to damage"

    def test_the_cli_shows_no_traceback_on_a_damaged_store(self, tmp_path: Path) -> None:
        pytest.importorskip("convstore.cli")
        tally = rel.corruption(
            tmp_path, trials=6, kinds=("hot", "sealed", "marker"), damages=DAMAGES, cli_every=1
        )
        assert_clean(tally)
        assert tally.counters.get("CLI runs", 0) == 12

    def test_a_closed_segment_cut_at_a_frame_boundary_is_reported(self, store_path: Path) -> None:
        # auto_compact off: the rolled segments must stay hot for this damage to be possible.
        with Store(store_path, roll_bytes=2_000, auto_compact=False) as st:
            s = st.create_session("a")
            for i in range(20):
                s.append("user", f"message {i} " + "x" * 300)
        first = sorted((store_path / "sessions" / "a").glob("hot.*"))[0]
        data = first.read_bytes()
        scan = frames.scan(data)
        assert scan.closed, "the first segment should have rolled"
        first.write_bytes(data[: scan.frames[-2][1]])  # drop the last frame and the end marker
        with Store(store_path) as st:
            assert len(st.session("a").messages()) == 19
            assert not st.check().ok

    def test_repair_does_not_hide_the_loss_of_a_closed_segment_cut_mid_frame(
        self, store_path: Path
    ) -> None:
        with Store(store_path, roll_bytes=2_000, auto_compact=False) as st:
            s = st.create_session("a")
            for i in range(20):
                s.append("user", f"message {i} " + "x" * 300)
        first = sorted((store_path / "sessions" / "a").glob("hot.*"))[0]
        data = first.read_bytes()
        start, end, _ = frames.scan(data).frames[-1]
        first.write_bytes(data[: (start + end) // 2])
        with Store(store_path) as st:
            assert not st.check().ok
            st.check(repair=True)
            assert not st.check().ok, "a lost acknowledged message is no longer reported"

    def test_no_flipped_bit_in_a_sealed_file_is_served_as_an_altered_record(
        self, store_path: Path
    ) -> None:
        pytest.importorskip("convstore.compaction")
        import pyarrow.parquet as pq

        from convstore import CorruptData
        from convstore.sealed import read_sealed

        with Store(store_path) as st:
            s = st.create_session("a")
            for i in range(30):
                s.append("user", f"message {i} " + "lorem ipsum " * 30)
            st.compact()
        sealed = next((store_path / "sessions" / "a").glob("sealed.*.parquet"))
        good = sealed.read_bytes()
        original = read_sealed(sealed)
        meta = pq.ParquetFile(sealed).metadata.row_group(0)
        column = next(
            meta.column(i)
            for i in range(meta.num_columns)
            if meta.column(i).path_in_schema == "record"
        )
        start = column.dictionary_page_offset or column.data_page_offset
        for offset in range(start, start + column.total_compressed_size):
            damaged = bytearray(good)
            damaged[offset] ^= 0x01
            sealed.write_bytes(bytes(damaged))
            try:
                records = read_sealed(sealed)
            except CorruptData:
                continue
            assert records == original, f"a flip at byte {offset} is read as an altered record"
