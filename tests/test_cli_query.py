"""CLI commands over the query layer: search, sql, stats."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.fixtures.cli import SAMPLE, ok, ok_json, refused

pytest.importorskip("convstore.query", reason="the query layer (issue 3) is not built yet")

HIT_KEYS = ["session_id", "message_id", "role", "created_at", "score", "snippet"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample data imported once for every test here (they only read)."""
    path = tmp_path_factory.mktemp("query") / "store"
    ok(path, "import", str(SAMPLE / "sessions.json"), str(SAMPLE / "chatgpt_conversations.json"))
    return path


class TestSearch:
    def test_hits_carry_the_documented_fields_and_highlights(self, sample: Path) -> None:
        hits = ok_json(sample, "search", "quokka")
        assert 1 <= len(hits) <= 3
        for hit in hits:
            assert list(hit)[: len(HIT_KEYS)] == HIT_KEYS
            assert "«" in hit["snippet"] and "quokka" in hit["snippet"].lower()

    def test_human_output_names_the_session_and_shows_the_snippet(self, sample: Path) -> None:
        hits = ok_json(sample, "search", "zyzzyva")
        text = ok(sample, "search", "zyzzyva").stdout
        for hit in hits:
            assert hit["session_id"] in text and hit["message_id"] in text
        assert "zyzzyva" in text.lower()

    def test_filters_and_order(self, sample: Path) -> None:
        users = ok_json(sample, "search", "python", "--role", "user", "--limit", "50")
        assert users and all(h["role"] == "user" for h in users)
        assert len(ok_json(sample, "search", "python", "--limit", "3")) == 3
        newest = ok_json(sample, "search", "python", "--newest", "--limit", "10")
        times = [h["created_at"] for h in newest]
        assert times == sorted(times, reverse=True)
        late = ok_json(sample, "search", "python", "--since", "2026-10-01", "--limit", "50")
        assert late and all(h["created_at"] >= "2026-10-01" for h in late)
        one = ok_json(sample, "search", "python", "--session", "s-0001", "--limit", "50")
        assert {h["session_id"] for h in one} <= {"s-0001"}

    def test_no_match_is_not_an_error(self, sample: Path) -> None:
        assert ok(sample, "search", "qwxzzyqv").stdout == "No messages match 'qwxzzyqv'.\n"
        assert ok_json(sample, "search", "qwxzzyqv") == []

    def test_bad_input_is_refused_in_one_line(self, sample: Path) -> None:
        assert refused(sample, "search", "python", "--since", "someday", code=2).startswith(
            "usage error: Invalid value for '--since': cannot read 'someday' as a date"
        )
        assert refused(sample, "search", "python", "--limit", "0", code=2).startswith(
            "usage error:"
        )


class TestSql:
    QUERY = "SELECT role, count(*) AS n FROM messages GROUP BY role ORDER BY n DESC, role"

    def test_table_csv_and_json_agree(self, sample: Path) -> None:
        rows = ok_json(sample, "sql", self.QUERY)
        assert list(rows[0]) == ["role", "n"]
        assert {r["role"] for r in rows} >= {"user", "assistant"}
        text = ok(sample, "sql", self.QUERY, "--format", "csv").stdout
        parsed = list(csv.DictReader(io.StringIO(text)))
        assert [(r["role"], int(r["n"])) for r in parsed] == [(r["role"], r["n"]) for r in rows]
        table = ok(sample, "sql", self.QUERY).stdout
        assert table.splitlines()[0].split() == ["role", "n"]
        assert table.rstrip().endswith(f"{len(rows)} rows")

    def test_bad_sql_is_refused_in_one_line(self, sample: Path) -> None:
        assert refused(sample, "sql", "SELEC nonsense").startswith("error: ")
        assert refused(sample, "sql", "SELECT * FROM no_such_table").startswith("error: ")


class TestStats:
    def test_json_and_human_output(self, sample: Path) -> None:
        stats = ok_json(sample, "stats")
        assert isinstance(stats, dict) and stats
        text = ok(sample, "stats").stdout
        first_key = next(iter(stats))
        assert first_key.replace("_", " ") in text

    def test_a_date_filter_narrows_the_figures(self, sample: Path) -> None:
        everything = ok(sample, "stats", "--json").stdout
        september = ok(sample, "stats", "--since", "2026-09-01", "--until", "2026-09-30", "--json")
        assert september.stdout != everything

    def test_a_bad_date_is_refused(self, sample: Path) -> None:
        assert refused(sample, "stats", "--until", "tomorrowish", code=2).startswith(
            "usage error: Invalid value for '--until': cannot read 'tomorrowish' as a date"
        )
