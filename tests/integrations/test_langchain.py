"""ConvstoreChatMessageHistory: every LangChain message type survives a write and a read.

langchain_tests ships no standard suite for chat message histories, so the contract is checked
here: lossless round trips through a fresh store handle, one append per batch, the async
variants, and use under ``RunnableWithMessageHistory`` with LangChain's own fake chat model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip(
    "langchain_core", reason="needs the langchain extra: pip install 'convstore[langchain]'"
)

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from convstore import InvalidContent, Store, frames
from convstore.integrations.langchain import ConvstoreChatMessageHistory
from tests.integrations.conftest import session_bytes

EVERY_KIND: list[BaseMessage] = [
    SystemMessage("You are terse."),
    HumanMessage("What is 2+2?", name="ada", id="h-1", additional_kwargs={"lang": "en"}),
    AIMessage(
        content="",
        id="run-1",
        name="calc",
        tool_calls=[{"name": "add", "args": {"a": 2, "b": 2}, "id": "call-1"}],
        invalid_tool_calls=[
            {
                "name": "bad",
                "args": "{oops",
                "id": "call-2",
                "error": "not JSON",
                "type": "invalid_tool_call",
            }
        ],
        additional_kwargs={"refusal": None},
        response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls"},
        usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
    ),
    ToolMessage("4", tool_call_id="call-1", status="success", artifact={"raw": [2, 2]}, name="add"),
    ToolMessage("boom", tool_call_id="call-2", status="error"),
    AIMessage("2+2 is 4.", id="run-2", response_metadata={"finish_reason": "stop"}),
    ChatMessage(content="Looks right.", role="critic"),
    ChatMessage(content="Be brief.", role="developer"),
    FunctionMessage(content="42", name="answer"),
    HumanMessage(
        content=[
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]
    ),
    HumanMessage(content=[{"type": "text", "text": "plain blocks"}, "and a bare string"]),
    AIMessage(content=[{"type": "text", "text": "block reply", "annotations": []}]),
    AIMessageChunk(content="streamed", id="run-3"),
]


def fresh(path: Path, session_id: str = "chat") -> ConvstoreChatMessageHistory:
    return ConvstoreChatMessageHistory(session_id, path)


def frame_count(store: Store, session_id: str) -> int:
    return sum(
        len(frames.scan(p.read_bytes(), 0).frames)
        for p in (store.path / "sessions" / session_id).glob("hot.*")
    )


class TestRoundTrip:
    @pytest.mark.parametrize("message", EVERY_KIND, ids=lambda m: f"{type(m).__name__}")
    def test_each_message_kind_reads_back_equal_from_a_fresh_store(
        self, store_path: Path, message: BaseMessage
    ) -> None:
        with Store(store_path) as store:
            ConvstoreChatMessageHistory("chat", store).add_messages([message])
        history = fresh(store_path)
        [back] = history.messages
        history.close()
        assert type(back) is type(message)
        assert back == message
        assert back.model_dump() == message.model_dump()

    def test_a_whole_conversation_reads_back_in_order(self, store_path: Path) -> None:
        with Store(store_path) as store:
            ConvstoreChatMessageHistory("chat", store).add_messages(EVERY_KIND)
        history = fresh(store_path)
        assert history.messages == EVERY_KIND
        history.close()

    def test_convstore_sees_the_role_and_the_text(self, store: Store) -> None:
        history = ConvstoreChatMessageHistory("user/42", store)
        history.add_messages(EVERY_KIND)
        stored = store.session("ext-e-user_2f42").messages()
        assert [m.role for m in stored] == [
            "system", "user", "assistant", "tool", "tool", "assistant", "user", "developer",
            "tool", "user", "user", "assistant", "assistant",
        ]  # fmt: skip
        assert stored[1].content == "What is 2+2?"
        assert stored[9].text == "What is in this picture?"  # the image block is kept aside
        assert stored[10].text == "plain blocks\nand a bare string"
        assert stored[11].content == [{"type": "text", "text": "block reply", "annotations": []}]
        assert "content" not in stored[1].metadata["langchain"]["data"]  # the text is not doubled

    def test_messages_other_code_appended_read_back_by_role(self, store: Store) -> None:
        session = store.create_session("plain")
        session.extend(
            [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "tool", "content": "4", "metadata": {"tool_call_id": "c1"}},
            ]
        )
        back = ConvstoreChatMessageHistory("plain", store).messages
        assert [type(m) for m in back] == [SystemMessage, HumanMessage, AIMessage, ToolMessage]
        assert [m.content for m in back] == ["sys", "hi", "hello", "4"]
        assert isinstance(back[3], ToolMessage) and back[3].tool_call_id == "c1"


class TestContract:
    def test_a_batch_is_one_append(self, store: Store) -> None:
        history = ConvstoreChatMessageHistory("batch", store)
        history.add_messages([HumanMessage("first")])
        before = frame_count(store, "batch")
        history.add_messages([HumanMessage(f"m{i}") for i in range(20)])
        assert frame_count(store, "batch") == before + 1
        assert len(history.messages) == 21

    def test_clear_empties_the_history_and_it_can_be_used_again(self, store: Store) -> None:
        history = ConvstoreChatMessageHistory("c", store)
        history.add_messages([HumanMessage("a"), AIMessage("b")])
        history.clear()
        assert history.messages == []
        history.add_message(HumanMessage("again"))
        assert [m.content for m in history.messages] == ["again"]

    def test_an_unknown_session_reads_as_empty_and_is_not_created(self, store: Store) -> None:
        assert ConvstoreChatMessageHistory("nobody", store).messages == []
        ConvstoreChatMessageHistory("nobody", store).clear()
        assert store.session_ids() == []

    def test_the_async_variants_match_the_sync_ones(self, store: Store) -> None:
        history = ConvstoreChatMessageHistory("async", store)

        async def run() -> list[BaseMessage]:
            await history.aadd_messages([HumanMessage("x"), AIMessage("y")])
            got = await history.aget_messages()
            await history.aclear()
            assert await history.aget_messages() == []
            return got

        assert [m.content for m in asyncio.run(run())] == ["x", "y"]

    def test_an_artifact_that_is_not_json_is_refused_and_nothing_is_written(
        self, store: Store
    ) -> None:
        history = ConvstoreChatMessageHistory("art", store)
        history.add_messages([HumanMessage("kept")])
        before = session_bytes(store.path)
        bad = ToolMessage("r", tool_call_id="c", artifact=object())
        with pytest.raises(InvalidContent, match=r"messages\[1\] \(tool\)"):
            history.add_messages([HumanMessage("not kept"), bad])
        assert session_bytes(store.path) == before
        assert [m.content for m in history.messages] == ["kept"]

    # LangChain deprecates RunnableWithMessageHistory (and BaseChatMessageHistory) in favour
    # of LangGraph persistence; it is still how chat histories are used today.
    @pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
    def test_a_chain_with_message_history_remembers_across_calls(self, store: Store) -> None:
        model = GenericFakeChatModel(messages=iter([AIMessage("Hi Ada."), AIMessage("Ada.")]))
        prompt = ChatPromptTemplate.from_messages(
            [MessagesPlaceholder("history"), ("human", "{question}")]
        )
        chain = RunnableWithMessageHistory(
            prompt | model,
            lambda sid: ConvstoreChatMessageHistory(sid, store),
            input_messages_key="question",
            history_messages_key="history",
        )
        config = {"configurable": {"session_id": "ada"}}
        chain.invoke({"question": "I am Ada."}, config)  # type: ignore[arg-type]
        chain.invoke({"question": "Who am I?"}, config)  # type: ignore[arg-type]
        contents = [m.content for m in ConvstoreChatMessageHistory("ada", store).messages]
        assert contents == ["I am Ada.", "Hi Ada.", "Who am I?", "Ada."]
