"""CLI import and export: reports, schemas, exit codes, refusals and the round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.cli import IMPORT, MALFORMED, SAMPLE, cli, ok, ok_json, refused
from tests.test_import import MALFORMED_CASES

IMPORT_KEYS = [
    "files",
    "sessions_added",
    "sessions_skipped",
    "messages_added",
    "messages_skipped",
    "states_added",
    "added",
]
SAMPLES = [
    str(SAMPLE / n)
    for n in ("sessions.json", "chatgpt_conversations.json", "claude_conversations.json")
]


class TestImport:
    def test_import_reports_what_it_did(self, store_path: Path) -> None:
        result = ok(store_path, "import", str(IMPORT / "claude_blocks.json"))
        assert result.stdout.splitlines() == [
            f"{IMPORT / 'claude_blocks.json'}: claude",
            "Added 3 sessions and 10 messages; 0 sessions and 0 messages were already there",
        ]
        assert result.stderr == ""  # no progress bar when stderr is not a terminal

    def test_import_json_schema_and_idempotence(self, store_path: Path) -> None:
        first = ok_json(store_path, "import", *SAMPLES)
        assert list(first) == IMPORT_KEYS
        assert first["files"] == [
            {"path": SAMPLES[0], "format": "convstore"},
            {"path": SAMPLES[1], "format": "chatgpt"},
            {"path": SAMPLES[2], "format": "claude"},
        ]
        assert first["sessions_added"] == len(first["added"]) > 40
        again = ok_json(store_path, "import", *SAMPLES)
        assert (again["sessions_added"], again["messages_added"]) == (0, 0)
        assert again["messages_skipped"] == first["messages_added"]

    def test_import_user_and_org_fill_in_sessions_without_them(self, store_path: Path) -> None:
        ok(
            store_path,
            "import",
            "--user",
            "me",
            "--org",
            "home",
            str(IMPORT / "openai_conversations.jsonl"),
        )
        users = {i["id"]: (i["user_id"], i["org_id"]) for i in ok_json(store_path, "ls")}
        assert users["trip-1"] == ("alice", "home")  # the file's own user wins
        assert sorted(users.values()) == [("alice", "home"), ("me", "home")]

    def test_a_bad_user_is_refused_before_anything_is_written(self, tmp_path: Path) -> None:
        line = refused(
            tmp_path / "s",
            "import",
            "--user",
            "x" * 300,
            str(IMPORT / "openai_lines.jsonl"),
            code=2,
        )
        assert line.startswith(
            "usage error: Invalid value for '--user': user_id is 300 characters long; "
            "make it at most 256"
        )
        assert not (tmp_path / "s").exists()

    def test_import_format_option(self, store_path: Path) -> None:
        line = refused(
            store_path, "import", "--format", "chatgpt", str(IMPORT / "claude_blocks.json")
        )
        assert "conversations[0]" in line
        assert refused(store_path, "import", "--format", "xml", "x.json", code=2).startswith(
            "usage error: Invalid value for '--format'"
        )

    @pytest.mark.parametrize(("name", "where"), MALFORMED_CASES)
    def test_a_malformed_file_exits_1_with_one_line_and_creates_nothing(
        self, tmp_path: Path, name: str, where: str
    ) -> None:
        target = tmp_path / "fresh"
        line = refused(target, "import", str(IMPORT / "openai_lines.jsonl"), str(MALFORMED / name))
        assert line.startswith(f"error: {MALFORMED / name}: ")
        assert where in line
        assert not target.exists()

    def test_a_malformed_file_leaves_an_existing_store_as_it_was(self, store_path: Path) -> None:
        ok(store_path, "import", str(IMPORT / "openai_lines.jsonl"))
        before = ok_json(store_path, "ls")
        refused(
            store_path,
            "import",
            str(IMPORT / "claude_blocks.json"),
            str(MALFORMED / "bad_syntax.json"),
        )
        assert ok_json(store_path, "ls") == before

    def test_import_needs_a_file(self, store_path: Path) -> None:
        assert refused(store_path, "import", code=2).startswith("usage error: Missing argument")
        assert "cannot read it" in refused(store_path, "import", "/nonexistent/x.json")


class TestExport:
    @pytest.fixture
    def filled(self, store_path: Path) -> Path:
        ok(
            store_path,
            "import",
            str(IMPORT / "convstore_small.json"),
            str(IMPORT / "claude_blocks.json"),
        )
        return store_path

    def test_export_to_stdout_is_the_document_alone(self, filled: Path) -> None:
        result = ok(filled, "export", "main")
        doc = json.loads(result.stdout)
        assert [s["id"] for s in doc["sessions"]] == ["main"]
        assert result.stderr == ""

    def test_export_to_a_file_says_what_it_wrote(self, filled: Path, tmp_path: Path) -> None:
        out = tmp_path / "all.jsonl"
        result = ok(filled, "export", "--format", "jsonl", "--output", str(out))
        assert result.stdout == (
            f"Exported 5 sessions, 13 messages to {out} (jsonl, {out.stat().st_size:,} bytes)\n"
        )
        assert len(out.read_text("utf-8").splitlines()) == 13

    def test_export_json_summary_schema(self, filled: Path, tmp_path: Path) -> None:
        out = tmp_path / "x.parquet"
        got = ok_json(filled, "export", "-f", "parquet", "-o", str(out), "--user", "bob")
        assert got == {
            "format": "parquet",
            "path": str(out),
            "sessions": 2,
            "messages": 3,
            "bytes": out.stat().st_size,
        }

    def test_export_filters(self, filled: Path) -> None:
        def ids(*args: str) -> list[str]:
            return [s["id"] for s in json.loads(ok(filled, "export", *args).stdout)["sessions"]]

        assert ids("--org", "acme") == ["main", "main.alt"]
        assert ids("--since", "2026-02-01") == [
            "cla00000-0000-4000-8000-000000000001",
            "cla00000-0000-4000-8000-000000000002",
            "cla00000-0000-4000-8000-000000000002.n2",
        ]
        assert ids("main.alt") == ["main", "main.alt"]  # JSON brings the parent along

    def test_export_usage_errors(self, filled: Path) -> None:
        assert "--output FILE" in refused(filled, "export", "--json", code=2)
        assert "Parquet needs --output" in refused(filled, "export", "-f", "parquet", code=2)
        assert "no session 'nope'" in refused(filled, "export", "nope")

    def test_markdown_and_csv_to_stdout(self, filled: Path) -> None:
        md = ok(filled, "export", "main", "-f", "markdown").stdout
        assert md.startswith("# Main line\n")
        csv_text = ok(filled, "export", "main", "-f", "csv").stdout
        assert csv_text.splitlines()[0].startswith("session_id,session_title,user_id")


def test_the_cli_round_trip_on_the_sample_data_is_byte_identical(tmp_path: Path) -> None:
    ok(tmp_path / "a", "import", *SAMPLES)
    ok(tmp_path / "a", "export", "-o", str(tmp_path / "a.json"))
    ok(tmp_path / "b", "import", str(tmp_path / "a.json"))
    ok(tmp_path / "b", "export", "-o", str(tmp_path / "b.json"))
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert cli(tmp_path / "b", "check").exit_code == 0
