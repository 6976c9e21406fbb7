"""Counts in the CLI's human output agree with their nouns: "1 message", "2 messages"."""

from __future__ import annotations

from pathlib import Path

import pytest

from convstore import Store
from convstore.check import CheckReport
from tests.fixtures.cli import ok


@pytest.fixture
def one(store_path: Path) -> Path:
    with Store(store_path) as s:
        s.create_session("chat").append("user", "hi", created_at="2020-01-01T00:00Z")
    return store_path


def test_show_says_1_message(one: Path) -> None:
    header = ok(one, "show", "chat").stdout.splitlines()[1]
    assert " · 1 message · " in header


def test_stats_says_1_session_and_1_message(one: Path) -> None:
    pytest.importorskip("convstore.query", reason="the query layer is not built yet")
    assert ok(one, "stats").stdout.startswith("1 session · 1 message")


def test_export_and_import_say_1_session_and_1_message(one: Path, tmp_path: Path) -> None:
    target = tmp_path / "one.json"
    said = ok(one, "export", "-o", str(target)).stdout
    assert said.startswith(f"Exported 1 session, 1 message to {target}")
    added = ok(tmp_path / "other", "import", str(target)).stdout.splitlines()[-1]
    assert added == "Added 1 session and 1 message; 0 sessions and 0 messages were already there"


def test_prune_and_compact_say_1_message_and_1_session(one: Path) -> None:
    said = ok(one, "prune", "--older-than", "2021-01-01", "--compact").stdout
    assert said.startswith("deleted 1 message older than 2021-01-01T00:00:00.000000Z in 1 session")
    assert said.endswith("; compacted 1 session\n")


def test_check_says_1_session_and_1_file() -> None:
    assert str(CheckReport(sessions=1, files=1, records=1)) == "1 session, 1 file, 1 record: ok"
