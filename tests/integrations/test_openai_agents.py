"""ConvstoreSession against the SDK's own SQLiteSession, and under Runner with a fake model.

The openai-agents wheel ships no fake model (the SDK's tests keep theirs), so ``CannedModel``
below is a minimal ``Model`` that returns queued outputs and records what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytest.importorskip(
    "agents", reason="needs the openai-agents extra: pip install 'convstore[openai-agents]'"
)

from agents import (
    Agent,
    ModelResponse,
    Runner,
    SQLiteSession,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from agents.items import TResponseInputItem
from agents.memory import Session, SessionSettings
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from convstore import InvalidContent, Store, frames
from convstore.integrations.openai_agents import ConvstoreSession
from tests.conftest import run_python, start_python
from tests.integrations.conftest import session_bytes

T = TypeVar("T")

# No trace export: these tests never reach the network.
set_tracing_disabled(True)

ITEMS: list[TResponseInputItem] = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {
        "type": "function_call",
        "call_id": "call-1",
        "name": "weather",
        "arguments": '{"city": "Paris"}',
        "id": "fc-1",
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call-1", "output": "sunny, 21C"},
    {
        "type": "message",
        "id": "msg-1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Sunny and 21C.", "annotations": []}],
    },
    {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "And "},
            {"type": "input_text", "text": "Rome?"},
        ],
    },
    {
        "role": "user",
        "content": [{"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"}],
    },
    {
        "type": "reasoning",
        "id": "rs-1",
        "summary": [{"type": "summary_text", "text": "look it up"}],
    },
    {"role": "developer", "content": "Prefer Celsius."},
]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class CannedModel(Model):
    """Returns one queued output per call and records the input it was given."""

    def __init__(self, outputs: list[list[Any]]) -> None:
        self.outputs = outputs
        self.inputs: list[list[TResponseInputItem]] = []

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> ModelResponse:
        self.inputs.append(
            list(input) if isinstance(input, list) else [{"role": "user", "content": input}]
        )
        return ModelResponse(output=self.outputs.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("CannedModel does not stream")


def reply(text: str, n: int) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg-{n}",
        role="assistant",
        status="completed",
        type="message",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


class TestSameAsSQLiteSession:
    @pytest.mark.parametrize("limit", [None, 0, 1, 3, len(ITEMS), 100, -1, -5])
    def test_get_items_with_each_limit_returns_what_sqlite_session_returns(
        self, store: Store, limit: int | None
    ) -> None:
        ours = ConvstoreSession("s", store)
        theirs = SQLiteSession("s")
        for session in (ours, theirs):
            run(session.add_items(ITEMS[:4]))
            run(session.add_items(ITEMS[4:]))
        assert run(ours.get_items(limit)) == run(theirs.get_items(limit))

    @pytest.mark.parametrize("setting", [None, 0, 2, -1])
    def test_the_session_settings_limit_applies_as_for_sqlite_session(
        self, store: Store, setting: int | None
    ) -> None:
        settings = SessionSettings(limit=setting)
        ours = ConvstoreSession("s", store, session_settings=settings)
        theirs = SQLiteSession("s", session_settings=settings)
        for session in (ours, theirs):
            run(session.add_items(ITEMS))
        assert run(ours.get_items()) == run(theirs.get_items())
        assert run(ours.get_items(1)) == run(theirs.get_items(1))

    def test_pop_add_and_clear_in_sequence_match_sqlite_session(self, store: Store) -> None:
        ours = ConvstoreSession("s", store)
        theirs = SQLiteSession("s")

        async def script(session: Session) -> list[Any]:
            seen: list[Any] = [await session.pop_item()]
            await session.add_items(ITEMS)
            seen += [await session.pop_item(), await session.pop_item()]
            await session.add_items([{"role": "user", "content": "after pops"}])
            seen.append(await session.get_items())
            await session.clear_session()
            seen += [await session.get_items(), await session.pop_item()]
            await session.add_items(ITEMS[:2])
            seen.append(await session.get_items())
            return seen

        assert run(script(ours)) == run(script(theirs))

    def test_it_satisfies_the_sdk_session_protocol(self, store: Store) -> None:
        session = ConvstoreSession("s", store)
        assert isinstance(session, Session)
        assert session.session_id == "s"
        assert session.session_settings == SessionSettings()


class TestStorage:
    def test_items_are_convstore_messages_with_their_text(self, store: Store) -> None:
        run(ConvstoreSession("user/42", store).add_items(ITEMS))
        stored = store.session("ext-e-user_2f42").messages()
        assert [m.role for m in stored] == [
            "system", "user", "assistant", "tool", "assistant", "user", "user", "assistant",
            "developer",
        ]  # fmt: skip
        assert [m.text for m in stored[:6]] == [
            "Be terse.",
            "What is the weather in Paris?",
            '{"city": "Paris"}',
            "sunny, 21C",
            "Sunny and 21C.",
            "And \nRome?",
        ]
        assert stored[7].text == "look it up"
        assert "content" not in stored[1].metadata["openai_agents"]["item"]  # not stored twice

    def test_a_batch_is_one_append(self, store: Store) -> None:
        session = ConvstoreSession("b", store)
        run(session.add_items(ITEMS[:1]))
        hot = list((store.path / "sessions" / "b").glob("hot.*"))
        size = sum(p.stat().st_size for p in hot)
        run(session.add_items(ITEMS))
        data = b"".join(p.read_bytes() for p in hot)
        assert len(frames.scan(data[size:], size).frames) == 1

    def test_an_item_that_is_not_json_is_refused_and_nothing_is_written(self, store: Store) -> None:
        session = ConvstoreSession("j", store)
        run(session.add_items(ITEMS[:1]))
        before = session_bytes(store.path)
        bad: Any = {"role": "user", "content": "x", "extra": object()}
        with pytest.raises(InvalidContent, match=r"items\[1\]"):
            run(session.add_items([ITEMS[1], bad]))
        assert session_bytes(store.path) == before

    def test_concurrent_pops_from_two_processes_never_return_the_same_item(
        self, store_path: Path
    ) -> None:
        with Store(store_path) as store:
            run(
                ConvstoreSession("q", store).add_items(
                    [{"role": "user", "content": f"item-{i}"} for i in range(40)]
                )
            )
        code = (
            "import asyncio, sys\n"
            "from convstore.integrations.openai_agents import ConvstoreSession\n"
            "s = ConvstoreSession('q', sys.argv[1])\n"
            "async def main():\n"
            "    for _ in range(20):\n"
            "        print((await s.pop_item())['content'])\n"
            "asyncio.run(main())\n"
        )
        procs = [
            start_python(code, str(store_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        popped: list[str] = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            popped += out.split()
        assert sorted(popped) == sorted(f"item-{i}" for i in range(40))
        with Store(store_path) as store:
            assert run(ConvstoreSession("q", store).get_items()) == []


class TestRunner:
    def test_a_conversation_is_remembered_across_two_runs_and_two_store_handles(
        self, store_path: Path
    ) -> None:
        @function_tool
        def weather(city: str) -> str:
            """The weather in a city."""
            return f"sunny in {city}"

        model = CannedModel(
            [
                [
                    ResponseFunctionToolCall(
                        type="function_call",
                        call_id="call-1",
                        name="weather",
                        arguments='{"city": "Paris"}',
                        id="fc-1",
                        status="completed",
                    )
                ],
                [reply("Sunny in Paris.", 1)],
                [reply("You asked about Paris.", 2)],
            ]
        )
        agent = Agent(name="assistant", instructions="Be terse.", model=model, tools=[weather])
        with Store(store_path) as store:
            first = run(
                Runner.run(agent, "Weather in Paris?", session=ConvstoreSession("u/1", store))
            )
        assert first.final_output == "Sunny in Paris."
        with Store(store_path) as store:
            second = run(
                Runner.run(agent, "What did I ask?", session=ConvstoreSession("u/1", store))
            )
            items = run(ConvstoreSession("u/1", store).get_items())
        assert second.final_output == "You asked about Paris."
        sent = model.inputs[-1]
        assert sent[0] == {"role": "user", "content": "Weather in Paris?"}
        assert any(i.get("type") == "function_call_output" for i in sent)
        assert sent[-1] == {"role": "user", "content": "What did I ask?"}
        assert [i.get("role") or i.get("type") for i in items] == [
            "user", "function_call", "function_call_output", "assistant", "user", "assistant",
        ]  # fmt: skip

    def test_a_second_process_reads_the_items_the_first_added(self, store_path: Path) -> None:
        with Store(store_path) as store:
            run(ConvstoreSession("user/42", store).add_items(ITEMS))
        code = (
            "import asyncio, json, sys\n"
            "from convstore.integrations.openai_agents import ConvstoreSession\n"
            "s = ConvstoreSession('user/42', sys.argv[1])\n"
            "print(json.dumps(asyncio.run(s.get_items())))\n"
        )
        done = run_python(code, str(store_path))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == ITEMS
