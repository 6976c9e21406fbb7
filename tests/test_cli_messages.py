"""CLI commands on messages: add, show, edit."""

from __future__ import annotations

from pathlib import Path

import pytest

from convstore import Store
from tests.fixtures.cli import IMPORT, ok, ok_json, refused

MESSAGE_KEYS = [
    "id",
    "session_id",
    "role",
    "content",
    "text",
    "metadata",
    "created_at",
    "edited_at",
]


@pytest.fixture
def chat(store_path: Path) -> Path:
    with Store(store_path) as s:
        c = s.create_session(
            "chat", title="Trip", user_id="alice", created_at="2026-05-01T10:00:00Z"
        )
        c.append("user", "Where to in May?", created_at="2026-05-01T10:00:00Z")
        c.append(
            "assistant",
            "Lisbon.\n\n```python\nprint('hi')\n```",
            metadata={"model": "gpt-4o"},
            created_at="2026-05-01T10:00:02Z",
        )
        c.append(
            "assistant",
            [
                {"type": "text", "text": "Checking.", "thinking": True},
                {"type": "tool_call", "id": "c1", "name": "weather", "arguments": {"city": "x"}},
            ],
            created_at="2026-05-01T10:00:03Z",
        )
    return store_path


class TestAdd:
    def test_add_without_session_makes_a_new_one(self, store_path: Path) -> None:
        result = ok(store_path, "add", "hello there")
        words = result.stdout.split()
        assert words[:2] == ["Added", "message"] and words[4:6] == ["new", "session"]
        with Store(store_path) as s:
            (session,) = s.sessions()
            assert session.id == words[6]
            assert [m.text for m in session.messages()] == ["hello there"]

    def test_add_to_a_session_with_role_and_meta(self, chat: Path) -> None:
        got = ok_json(
            chat,
            "add",
            "-s",
            "chat",
            "--role",
            "assistant",
            "--meta",
            "model=o3",
            "--meta",
            "tokens=7",
            "Porto.",
        )
        assert list(got) == ["session", "created_session", "message"]
        assert got["session"] == "chat" and got["created_session"] is False
        assert list(got["message"]) == MESSAGE_KEYS
        assert got["message"]["role"] == "assistant"
        assert got["message"]["metadata"] == {"model": "o3", "tokens": 7}
        assert got["message"]["text"] == "Porto."

    def test_add_reads_stdin(self, chat: Path) -> None:
        ok(chat, "add", "-s", "chat", input="from a pipe\nsecond line\n")
        ok(chat, "add", "-s", "chat", "-", input="dash")
        texts = [m["text"] for m in ok_json(chat, "show", "chat")["messages"]]
        assert texts[-2:] == ["from a pipe\nsecond line\n", "dash"]

    def test_add_with_empty_stdin_is_bad_usage(self, chat: Path) -> None:
        assert "stdin was empty" in refused(chat, "add", "-s", "chat", code=2)

    def test_add_new_session_options(self, store_path: Path) -> None:
        got = ok_json(store_path, "add", "--title", "T", "--user", "u", "--org", "o", "hi")
        with Store(store_path) as s:
            session = s.session(got["session"])
            assert (session.title, session.user_id, session.org_id) == ("T", "u", "o")
        line = refused(store_path, "add", "-s", got["session"], "--title", "X", "hi", code=2)
        assert "describe a new session" in line

    def test_a_refused_message_leaves_no_new_session_behind(self, store_path: Path) -> None:
        assert "role 'robot'" in refused(store_path, "add", "--role", "robot", "hi", code=2)
        assert not store_path.exists()
        ok(store_path, "init")
        refused(store_path, "add", "--role", "robot", "hi", code=2)
        assert ok_json(store_path, "ls") == []

    def test_add_refuses_a_bad_role_and_a_missing_session(self, chat: Path) -> None:
        assert "role 'robot' is not one of" in refused(
            chat, "add", "-s", "chat", "-r", "robot", "x", code=2
        )
        assert "no session 'nope'" in refused(chat, "add", "-s", "nope", "x")


class TestShow:
    def test_show_is_a_transcript(self, chat: Path) -> None:
        text = ok(chat, "show", "chat").stdout
        lines = text.splitlines()
        assert lines[0] == "Trip"
        assert lines[1].startswith("chat · user alice · 3 messages · 2026-05-01 10:00 → ")
        assert "user  2026-05-01 10:00  " in text
        assert "  Where to in May?" in lines
        assert "assistant  2026-05-01 10:00  gpt-4o  " in text
        assert "  ```python" in lines
        assert "  > *thinking*" in lines
        assert "  **tool call** `weather` (id `c1`)" in lines

    def test_show_limit_keeps_the_last_messages(self, chat: Path) -> None:
        text = ok(chat, "show", "chat", "--limit", "1").stdout
        assert "last 1 of 3 messages" in text
        assert "Where to in May?" not in text
        assert [m["role"] for m in ok_json(chat, "show", "chat", "-n", "2")["messages"]] == [
            "assistant",
            "assistant",
        ]

    def test_show_json_schema(self, chat: Path) -> None:
        got = ok_json(chat, "show", "chat")
        assert list(got) == ["session", "messages"]
        assert got["session"]["id"] == "chat" and got["session"]["messages"] == 3
        assert [list(m) for m in got["messages"]] == [MESSAGE_KEYS] * 3
        assert got["messages"][1]["created_at"] == "2026-05-01T10:00:02.000000Z"
        assert got["messages"][2]["text"] == 'Checking.\nweather({"city":"x"})'
        assert ok_json(chat, "show", "chat", "--format", "json") == got  # --json is its alias

    def test_show_markdown(self, chat: Path) -> None:
        text = ok(chat, "show", "chat", "--format", "markdown").stdout
        assert text.startswith("# Trip\n\nsession `chat` · user `alice` · created 2026-05-01")
        assert "## assistant · 2026-05-01 10:00:02 UTC\n\nLisbon." in text

    def test_show_of_an_imported_chatgpt_branch(self, store_path: Path) -> None:
        ok(store_path, "import", str(IMPORT / "chatgpt_branches.json"))
        text = ok(store_path, "show", "c0ffee00-0000-4000-8000-000000000001.u3").stdout
        assert "branched from c0ffee00-0000-4000-8000-000000000001 at message" in text
        assert "user  2026-01-01 00:00  hidden  " in text
        assert text.rstrip().endswith("Fjord news: nothing new.")

    def test_show_errors(self, chat: Path) -> None:
        assert refused(chat, "show", "nope") == (
            f"error: no session 'nope' in {chat}; list them with `convstore ls` or store.sessions()"
        )
        line = refused(chat, "show", "chat", "--format", "html", code=2)
        assert line.startswith("usage error: Invalid value for '--format'")

    def test_an_empty_session_shows_its_header(self, chat: Path) -> None:
        ok(chat, "new", "--id", "empty")
        assert ok(chat, "show", "empty").stdout.splitlines()[1].startswith("empty · 0 messages")
        assert ok_json(chat, "show", "empty")["messages"] == []


class TestEdit:
    def test_edit_replaces_the_content(self, chat: Path) -> None:
        mid = ok_json(chat, "show", "chat")["messages"][0]["id"]
        assert ok(chat, "edit", "chat", mid, "Where to in June?").stdout == (
            f"Edited message {mid} in session chat\n"
        )
        got = ok_json(chat, "show", "chat")["messages"][0]
        assert got["text"] == "Where to in June?" and got["edited_at"] is not None

    def test_edit_json_and_stdin(self, chat: Path) -> None:
        mid = ok_json(chat, "show", "chat")["messages"][0]["id"]
        got = ok_json(chat, "edit", "chat", mid, input="piped text")
        assert list(got) == MESSAGE_KEYS and got["content"] == "piped text"

    def test_edit_refuses_an_unknown_message(self, chat: Path) -> None:
        assert "no message 'x'" in refused(chat, "edit", "chat", "x", "new")
