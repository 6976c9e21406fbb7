"""CLI commands that look after a store, and the demo: state, check, reindex, demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convstore import Store, layout
from convstore.cli import app
from convstore.demo import SAMPLE_FILES, find_sample_data
from tests.fixtures.cli import SAMPLE, cli, ok, ok_json, refused


@pytest.fixture
def chat(store_path: Path) -> Path:
    with Store(store_path) as s:
        s.create_session("chat").append("user", "hi")
    return store_path


class TestState:
    def test_set_then_get(self, chat: Path) -> None:
        result = ok(chat, "state", "set", "chat", '{"step": 2, "plan": ["a", "b"]}')
        assert result.stdout.startswith("Saved state ") and result.stdout.endswith(
            " for session chat\n"
        )
        assert ok(chat, "state", "get", "chat").stdout == (
            '{\n  "step": 2,\n  "plan": [\n    "a",\n    "b"\n  ]\n}\n'
        )

    def test_json_schemas(self, chat: Path) -> None:
        saved = ok_json(chat, "state", "set", "chat", input="[1, 2]")
        assert list(saved) == ["session", "id"] and saved["session"] == "chat"
        got = ok_json(chat, "state", "get", "chat")
        assert list(got) == ["session", "id", "created_at", "state"]
        assert (got["id"], got["state"]) == (saved["id"], [1, 2])

    def test_get_without_a_state_prints_null(self, chat: Path) -> None:
        assert ok(chat, "state", "get", "chat").stdout == "null\n"
        assert ok_json(chat, "state", "get", "chat") == {
            "session": "chat",
            "id": None,
            "created_at": None,
            "state": None,
        }

    def test_errors(self, chat: Path) -> None:
        assert "not valid JSON" in refused(chat, "state", "set", "chat", "{oops", code=2)
        assert "no session 'nope'" in refused(chat, "state", "get", "nope")
        assert "which JSON cannot store" in refused(chat, "state", "set", "chat", "NaN")


class TestCheck:
    def test_a_clean_store_is_ok(self, chat: Path) -> None:
        assert ok(chat, "check").stdout == "1 session, 1 file, 2 records: ok\n"
        report = ok_json(chat, "check")
        assert list(report) == ["ok", "sessions", "files", "records", "issues"]
        assert report["ok"] is True and report["issues"] == []

    def test_a_torn_tail_exits_1_until_repaired(self, chat: Path) -> None:
        (segment,) = (chat / "sessions" / "chat").glob("hot.*.jsonl.zst")
        # The start of a copy of the first frame: what a writer killed mid-append leaves.
        head = segment.read_bytes()[:24]
        with open(segment, "ab") as fh:
            fh.write(head)
        result = cli(chat, "check")
        assert result.exit_code == 1
        assert "torn tail" in result.stdout
        assert "convstore check --repair" in result.stderr
        broken = cli(chat, "check", "--json")
        assert broken.exit_code == 1
        assert '"ok": false' in broken.stdout
        repaired = ok(chat, "check", "--repair")
        assert "(repaired)" in repaired.stdout
        assert ok_json(chat, "check")["ok"] is True


class TestReindex:
    def test_reindex_rebuilds_and_reports(self, chat: Path) -> None:
        pytest.importorskip("convstore.query", reason="the query layer is not built yet")
        assert ok_json(chat, "reindex") == {"reindexed": True, "sessions": 1}
        assert ok(chat, "reindex").stdout.startswith("Rebuilt the catalog and search index")


class TestDemo:
    def test_the_sample_data_is_found_from_a_checkout(self) -> None:
        assert find_sample_data() == SAMPLE

    def test_a_folder_without_the_sample_files_is_refused_with_a_way_out(
        self, tmp_path: Path
    ) -> None:
        line = refused(None, "demo", str(tmp_path / "d"), "--sample", str(tmp_path))
        assert line.startswith(f"error: the sample data is not here (looked in {tmp_path})")
        assert "--sample DIR" in line and "CONVSTORE_SAMPLE_DATA" in line
        assert not (tmp_path / "d").exists()

    def test_demo_json_builds_the_store_and_lists_the_commands(self, tmp_path: Path) -> None:
        target = tmp_path / "demo"
        got = ok_json(None, "demo", str(target))
        assert list(got) == ["store", "sample_data", "import", "commands"]
        assert got["import"]["sessions_added"] > 40
        assert got["commands"][0].startswith(f"convstore --store {target} import ")
        assert any(c.endswith("ls --limit 5") for c in got["commands"])
        again = ok_json(None, "demo", str(target))
        assert again["import"]["sessions_added"] == 0  # a second run adds nothing

    def test_demo_builds_the_store_given_by_store_before_the_command(self, tmp_path: Path) -> None:
        target = tmp_path / "given"
        got = ok_json(target, "demo")
        assert got["store"] == str(target)
        assert got["commands"][0].startswith(f"convstore --store {target} import ")
        assert (target / layout.MARKER).exists()

    def test_demo_builds_the_store_named_by_convstore_dir(self, tmp_path: Path) -> None:
        target = tmp_path / "from-env"
        result = CliRunner().invoke(app, ["demo", "--json"], env={"CONVSTORE_DIR": str(target)})
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["store"] == str(target)
        assert (target / layout.MARKER).exists()

    def test_demo_runs_each_command_after_printing_it(self, tmp_path: Path) -> None:
        pytest.importorskip("convstore.query", reason="the query layer is not built yet")
        target = tmp_path / "demo"
        text = ok(None, "demo", str(target)).stdout
        commands = [line for line in text.splitlines() if line.startswith("$ convstore")]
        assert [c.split()[4] for c in commands] == [
            "import",
            "ls",
            "show",
            "search",
            "stats",
            "sql",
        ]
        assert f"$ convstore --store {target} ls --limit 5" in commands
        assert "Try next:" in text
        for name in SAMPLE_FILES:
            assert name in commands[0]
        # The introduction wraps inside its box when piped instead of being cut at its edge.
        intro = " ".join(line.strip("│ ") for line in text.split("╰")[0].splitlines())
        assert "so you can run it again yourself." in intro
