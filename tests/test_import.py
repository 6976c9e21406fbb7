"""Import: each format's mapping to sessions and messages, idempotence, and refusals."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from convstore import ImportFormatError, Message, Store
from convstore.importers import (
    derive_id,
    import_files,
    plan_files,
    read_plan,
)
from tests.fixtures.cli import IMPORT, MALFORMED, SAMPLE

CHATGPT = IMPORT / "chatgpt_branches.json"
CLAUDE = IMPORT / "claude_blocks.json"
CONV = "c0ffee00-0000-4000-8000-000000000001"


def by_node(messages: list[Message]) -> dict[str, Message]:
    return {m.metadata["chatgpt"]["id"]: m for m in messages}


def folder_bytes(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


class TestChatGPT:
    def test_the_current_node_path_is_the_main_session(self, store: Store) -> None:
        import_files(store, [CHATGPT])
        main = store.session(CONV)
        nodes = [m.metadata["chatgpt"]["id"] for m in main.messages()]
        assert nodes == ["ctx", "u1", "a2", "a3", "t1", "a4", "u2", "a5"]
        assert main.title == "Parsing JSON"
        assert main.parent is None
        assert main.metadata == {"source": "chatgpt", "model": "o3"}

    def test_every_other_branch_is_a_branch_session_linked_to_its_fork(self, store: Store) -> None:
        import_files(store, [CHATGPT])
        main = by_node(store.session(CONV).messages())
        regenerated = store.session(f"{CONV}.a1")
        assert regenerated.parent == (CONV, main["u1"].id)
        assert [m.text for m in regenerated.messages()][-2:] == [
            "How do I parse JSON in Python?",
            "Use json.loads.",
        ]
        later = store.session(f"{CONV}.u3")
        assert later.parent == (CONV, main["a4"].id)
        own = [m for m in later.messages() if m.session_id == later.id]
        assert [m.metadata["chatgpt"]["id"] for m in own] == ["u3", "a6"]

    def test_every_node_with_content_lands_in_exactly_one_session(self, store: Store) -> None:
        import_files(store, [CHATGPT])
        owned = [
            m.metadata["chatgpt"]["id"]
            for s in store.sessions()
            if s.id.startswith(CONV)
            for m in s.messages()
            if m.session_id == s.id
        ]
        assert sorted(owned) == sorted(
            ["ctx", "u1", "a1", "a2", "a3", "t1", "a4", "u2", "a5", "u3", "a6"]
        )

    def test_an_empty_hidden_system_node_is_dropped_and_a_hidden_one_with_text_kept(
        self, store: Store
    ) -> None:
        import_files(store, [CHATGPT])
        main = by_node(store.session(CONV).messages())
        assert "sys" not in main
        assert main["ctx"].metadata["chatgpt"]["hidden"] is True
        assert main["ctx"].content == "I write Python.\n\nAnswer briefly."

    def test_a_null_create_time_takes_the_message_above_plus_one_microsecond(
        self, store: Store
    ) -> None:
        import_files(store, [CHATGPT])
        main = by_node(store.session(CONV).messages())
        delta = main["a3"].created_at - main["a2"].created_at
        assert delta.total_seconds() == pytest.approx(1e-6)
        assert main["a3"].metadata["chatgpt"]["create_time"] is None
        assert "create_time" not in main["a2"].metadata["chatgpt"]

    def test_content_types_map_to_parts(self, store: Store) -> None:
        import_files(store, [CHATGPT])
        main = by_node(store.session(CONV).messages())
        assert main["a2"].content == [
            {
                "type": "text",
                "text": "The standard json module is enough.",
                "thinking": True,
                "summary": "Picking a module",
            }
        ]
        assert main["a3"].content == "```python\nimport json\nprint(json.loads('{\"a\": 1}'))\n```"
        assert main["a3"].metadata["chatgpt"]["recipient"] == "python"
        assert main["t1"].role == "tool"
        assert main["t1"].metadata["chatgpt"]["name"] == "python"
        assert isinstance(main["u2"].content, list)
        image, question = main["u2"].content
        assert image == {
            "type": "image",
            "url": "sediment://file_00000000abc",
            "width": 64,
            "height": 48,
            "size_bytes": 1234,
        }
        assert question == {"type": "text", "text": "What is in this image?"}
        assert main["a5"].metadata["model"] == "o3"

    def test_an_unfamiliar_content_type_keeps_its_text_and_the_original(self, store: Store) -> None:
        import_files(store, [CHATGPT])
        a6 = by_node(store.session(f"{CONV}.u3").messages())["a6"]
        assert a6.content == "Fjord news: nothing new."
        assert a6.metadata["chatgpt"]["content"]["content_type"] == "tether_browsing_display"

    def test_without_current_node_or_id_the_newest_leaf_is_the_main_line(
        self, store: Store
    ) -> None:
        _, sessions = read_plan(CHATGPT)
        plain = [s for s in sessions if s.id.startswith("chatgpt-")]
        assert len(plain) == 2
        main = next(s for s in plain if s.parent is None)
        assert [m.record["content"] for m in main.messages] == ["Pick a number.", "Forty-two."]
        assert main.title is None

    def test_message_ids_are_deterministic_and_time_ordered(self) -> None:
        _, first = read_plan(CHATGPT)
        _, second = read_plan(CHATGPT)
        assert [m.id for s in first for m in s.messages] == [
            m.id for s in second for m in s.messages
        ]
        for s in first:
            for m in s.messages:
                assert m.id[:14] == derive_id("x", _us(m.record["created_at"]))[:14]


def _us(iso: str) -> int:
    from convstore.ids import parse_us

    return parse_us(iso)


class TestClaude:
    def test_blocks_become_parts_and_thinking_is_marked(self, store: Store) -> None:
        import_files(store, [CLAUDE])
        s = store.session("cla00000-0000-4000-8000-000000000001")
        m = s.messages()
        assert s.title == "Thinking and tools"
        assert [x.role for x in m] == [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant",
        ]
        assert m[0].content == "What's the weather in Oslo?"
        assert m[1].content == [
            {"type": "text", "text": "I should call the weather tool.", "thinking": True},
            {
                "type": "tool_call",
                "id": "toolu_1",
                "name": "get_weather",
                "arguments": {"city": "Oslo"},
            },
        ]
        assert m[2].content == [
            {"type": "tool_result", "tool_call_id": "toolu_1", "content": "-3 C, snow"}
        ]

    def test_odd_blocks_attachments_and_empty_messages_are_kept(self, store: Store) -> None:
        import_files(store, [CLAUDE])
        m = store.session("cla00000-0000-4000-8000-000000000001").messages()
        odd = m[3].content[1]
        assert isinstance(odd, dict)
        assert odd["text"] == "[voice_note]"
        assert odd["claude_block"] == {"type": "voice_note", "title": "odd block"}
        assert m[4].content == [{"type": "text", "text": "hello", "attachment": "notes.txt"}]
        assert m[5].content == ""

    def test_a_message_tree_becomes_a_session_and_its_branches(self, store: Store) -> None:
        import_files(store, [CLAUDE])
        main = store.session("cla00000-0000-4000-8000-000000000002")
        assert [x.text for x in main.messages()] == ["Name a colour.", "Green.", "Why green?"]
        assert main.title is None
        branch = store.session("cla00000-0000-4000-8000-000000000002.n2")
        assert branch.parent == (main.id, main.messages()[0].id)
        assert [x.text for x in branch.messages()] == ["Name a colour.", "Blue."]


class TestOpenAIStyle:
    def test_a_json_list_of_messages_is_one_conversation(self, store: Store) -> None:
        report = import_files(store, [IMPORT / "openai_messages.json"])
        assert report.sessions_added == 1
        (s,) = store.sessions()
        m = s.messages()
        assert [x.role for x in m] == ["system", "user", "assistant", "tool", "assistant"]
        assert m[1].content[1] == {"type": "image", "url": "https://example.com/cat.png"}
        assert m[2].content == [
            {
                "type": "tool_call",
                "id": "call_1",
                "name": "describe",
                "arguments": {"url": "https://example.com/cat.png"},
            }
        ]
        assert m[3].content == [
            {"type": "tool_result", "tool_call_id": "call_1", "content": "a cat"}
        ]
        assert m[4].metadata == {"name": "helper"}
        assert s.metadata == {"source": "openai"}

    def test_jsonl_holds_one_conversation_per_line(self, store: Store) -> None:
        report = import_files(store, [IMPORT / "openai_conversations.jsonl"])
        assert (report.sessions_added, report.messages_added) == (2, 4)
        trip = store.session("trip-1")
        assert (trip.title, trip.user_id) == ("Trip", "alice")
        assert trip.messages()[1].created_at.isoformat() == "2026-03-01T08:00:03+00:00"

    def test_jsonl_of_single_messages_is_one_conversation(self, store: Store) -> None:
        import_files(store, [IMPORT / "openai_lines.jsonl"])
        (s,) = store.sessions()
        assert [m.text for m in s.messages()] == ["One line, one message.", "Understood.", "Thanks"]

    def test_untimed_messages_are_recognised_on_a_second_import(self, store: Store) -> None:
        import_files(store, [IMPORT / "openai_messages.json"])
        again = import_files(store, [IMPORT / "openai_messages.json"])
        assert (again.sessions_added, again.messages_added, again.messages_skipped) == (0, 0, 5)


class TestConvstoreExport:
    def test_ids_states_edits_and_branches_are_kept(self, store: Store) -> None:
        import_files(store, [IMPORT / "convstore_small.json"])
        main = store.session("main")
        _first, second = main.messages()
        assert second.id == "0600000000000000000000beef"
        assert second.edited_at is not None and second.edited_at.isoformat().startswith(
            "2026-01-06"
        )
        assert main.load_state() == {"step": 2, "notes": ["a"]}
        assert main.metadata == {"k": [1, 2]}
        alt = store.session("main.alt")
        assert alt.parent == ("main", second.id)
        assert [m.text for m in alt.messages()] == ["First", "Second, edited", "Branch question"]

    def test_the_sample_export_imports_whole(self, store: Store) -> None:
        report = import_files(store, [SAMPLE / "sessions.json"])
        doc = json.loads((SAMPLE / "sessions.json").read_text("utf-8"))
        assert report.sessions_added == len(doc["sessions"])
        assert report.messages_added == sum(len(s["messages"]) for s in doc["sessions"])
        first = doc["sessions"][0]
        s = store.session(first["id"])
        assert [m.content for m in s.messages()] == [m["content"] for m in first["messages"]]
        assert (s.user_id, s.org_id, s.title) == (first["user_id"], first["org_id"], first["title"])


class TestIdempotence:
    @pytest.mark.parametrize(
        "name",
        [
            "chatgpt_branches.json",
            "claude_blocks.json",
            "convstore_small.json",
            "openai_conversations.jsonl",
        ],
    )
    def test_importing_the_same_file_twice_adds_nothing(self, store: Store, name: str) -> None:
        first = import_files(store, [IMPORT / name])
        before = folder_bytes(store.path)
        again = import_files(store, [IMPORT / name])
        assert again.sessions_added == again.messages_added == again.states_added == 0
        assert again.sessions_skipped == first.sessions_added
        assert again.messages_skipped == first.messages_added
        assert folder_bytes(store.path) == before

    def test_an_interrupted_import_is_completed_by_the_next(self, store: Store) -> None:
        plan = plan_files([IMPORT / "convstore_small.json"])
        main = plan.sessions[0]
        # As if the process died after creating the session, before its messages.
        store.create_session(main.id, title=main.title, created_at=main.created_at)
        report = import_files(store, [IMPORT / "convstore_small.json"])
        assert report.messages_added == 3
        assert len(store.session("main").messages()) == 2

    def test_a_deleted_session_is_not_brought_back(self, store: Store) -> None:
        import_files(store, [IMPORT / "convstore_small.json"])
        store.delete_session("main.alt")
        report = import_files(store, [IMPORT / "convstore_small.json"])
        assert report.messages_added == 0
        assert "main.alt" not in store

    def test_a_zip_export_is_read_like_its_conversations_json(
        self, store: Store, tmp_path: Path
    ) -> None:
        archive = tmp_path / "chatgpt-export.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(CHATGPT, "conversations.json")
            zf.writestr("chat.html", "<html></html>")
        report = import_files(store, [archive])
        assert report.formats == {str(archive): "chatgpt"}
        assert report.sessions_added == 5


MALFORMED_CASES: list[tuple[str, str]] = [
    ("bad_syntax.json", "line 3 column 16: not valid JSON"),
    ("chatgpt_bad_role.json", "conversations[1].mapping.x.message.author.role"),
    ("chatgpt_cycle.json", "conversations[1].mapping.a: the node is not reachable"),
    ("claude_bad_sender.json", "conversations[1].chat_messages[2].sender: sender 'robot'"),
    ("convstore_bad_id.json", "sessions[1].messages[0].id: 'not-an-id' is not a message id"),
    ("convstore_newer.json", "version: the file is export version 2"),
    ("convstore_orphan_branch.json", "sessions[0].parent: parent session 'main'"),
    ("openai_bad_line.jsonl", "line 3 column 51: not valid JSON"),
    ("openai_bad_role.json", "[0].role: role 'wizard' is not one of"),
    ("unknown_shape.json", "cannot tell which export this is"),
]


class TestMalformedFiles:
    @pytest.mark.parametrize(("name", "where"), MALFORMED_CASES)
    def test_a_malformed_file_is_refused_with_its_position_and_nothing_is_written(
        self, store: Store, name: str, where: str
    ) -> None:
        before = folder_bytes(store.path)
        with pytest.raises(ImportFormatError) as info:
            import_files(store, [MALFORMED / name])
        message = str(info.value)
        assert message.startswith(str(MALFORMED / name) + ": ")
        assert where in message
        assert message.endswith("nothing was imported")
        assert folder_bytes(store.path) == before
        assert store.sessions() == []

    def test_a_bad_file_after_a_good_one_refuses_both(self, store: Store) -> None:
        with pytest.raises(ImportFormatError):
            import_files(store, [CHATGPT, MALFORMED / "claude_bad_sender.json"])
        assert store.sessions() == []

    def test_a_missing_file_is_refused(self, store: Store, tmp_path: Path) -> None:
        with pytest.raises(ImportFormatError, match="cannot read it"):
            import_files(store, [tmp_path / "nope.json"])

    def test_a_forced_format_that_does_not_fit_is_refused(self, store: Store) -> None:
        with pytest.raises(ImportFormatError, match=r"conversations\[0\]"):
            import_files(store, [CLAUDE], format="chatgpt")

    def test_content_convstore_refuses_is_refused_at_its_path(
        self, store: Store, tmp_path: Path
    ) -> None:
        doc: dict[str, Any] = json.loads((IMPORT / "convstore_small.json").read_text("utf-8"))
        doc["sessions"][0]["messages"][1]["content"] = [{"type": "video"}]
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc), "utf-8")
        with pytest.raises(ImportFormatError, match=r"sessions\[0\]\.messages\[1\]: content\[0\]"):
            import_files(store, [bad])

    def test_the_same_session_in_two_files_is_refused(self, store: Store, tmp_path: Path) -> None:
        copy = tmp_path / "copy.json"
        shutil.copy(IMPORT / "convstore_small.json", copy)
        with pytest.raises(ImportFormatError, match="is also in"):
            import_files(store, [IMPORT / "convstore_small.json", copy])
