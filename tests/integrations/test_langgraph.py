"""ConvstoreSaver against LangGraph's own conformance suite and real graphs."""

from __future__ import annotations

import asyncio
import base64
import operator
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict, cast

import pytest

pytest.importorskip(
    "langgraph", reason="needs the langgraph extra: pip install 'convstore[langgraph]'"
)
pytest.importorskip(
    "langgraph.checkpoint.conformance",
    reason="needs langgraph-checkpoint-conformance: pip install 'convstore[test-integrations]'",
)

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import CheckpointMetadata, empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import END, START, MessagesState, StateGraph

from convstore import InvalidContent, InvalidInput, SessionExists, Store, frames
from convstore.integrations.langgraph import ConvstoreSaver
from tests.conftest import run_python
from tests.integrations.conftest import session_bytes


@pytest.fixture
def saver(store: Store) -> Iterator[ConvstoreSaver]:
    yield ConvstoreSaver(store)


def chat_graph(saver: ConvstoreSaver, replies: Sequence[str] | None = None) -> Any:
    """START -> bot -> END: the bot answers each user message (a fake model, no network)."""

    def bot(state: MessagesState) -> dict[str, Any]:
        n = len(state["messages"])
        text = replies[n // 2] if replies else f"reply to {state['messages'][-1].content}"
        return {"messages": [AIMessage(content=text, id=f"ai-{n}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("bot", bot)
    builder.add_edge(START, "bot")
    builder.add_edge("bot", END)
    return builder.compile(checkpointer=saver)


def talk(graph: Any, thread: str, *texts: str) -> list[AnyMessage]:
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    out: dict[str, Any] = {}
    for text in texts:
        out = graph.invoke({"messages": [HumanMessage(content=text)]}, config)
    return list(out["messages"])


def put_raw(
    saver: ConvstoreSaver,
    thread: str,
    parent: str | None,
    values: dict[str, Any],
    new: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> str:
    """One checkpoint written the way the Pregel loop writes it."""
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = dict(new)
    configurable: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if parent is not None:
        configurable["checkpoint_id"] = parent
    meta = cast(CheckpointMetadata, metadata or {"step": 0})
    stored = saver.put({"configurable": configurable}, cp, meta, new)
    return str(stored["configurable"]["checkpoint_id"])


class TestConformance:
    def test_the_official_suite_passes_every_base_and_extended_capability(
        self, tmp_path: Path
    ) -> None:
        @checkpointer_test(name="ConvstoreSaver")
        async def factory() -> AsyncIterator[ConvstoreSaver]:
            with Store(tmp_path / "conformance") as store:
                yield ConvstoreSaver(store)

        report = asyncio.run(validate(factory))
        failures = {n: r.failures for n, r in report.results.items() if r.failures}
        assert report.passed_all_base(), failures
        for capability in ("copy_thread", "prune", "delete_for_runs"):
            result = report.results[capability]
            assert result.detected and result.passed is True, (capability, result.failures)
        assert report.conformance_level() == "FULL"


class TestGraphs:
    def test_a_conversation_survives_a_new_saver_on_the_same_folder(self, store_path: Path) -> None:
        with Store(store_path) as store:
            talk(chat_graph(ConvstoreSaver(store)), "t1", "hello", "how are you")
        with ConvstoreSaver(store_path) as saver:
            messages = talk(chat_graph(saver), "t1", "bye")
        assert [m.content for m in messages] == [
            "hello",
            "reply to hello",
            "how are you",
            "reply to how are you",
            "bye",
            "reply to bye",
        ]

    def test_history_and_time_travel_fork_from_an_old_checkpoint(
        self, saver: ConvstoreSaver
    ) -> None:
        graph = chat_graph(saver)
        talk(graph, "t", "one", "two")
        config: RunnableConfig = {"configurable": {"thread_id": "t"}}
        history = list(graph.get_state_history(config))
        after_one = next(h for h in history if len(h.values.get("messages", [])) == 2)
        forked = graph.invoke({"messages": [HumanMessage("other")]}, after_one.config)
        assert [m.content for m in forked["messages"]] == [
            "one",
            "reply to one",
            "other",
            "reply to other",
        ]
        # The original branch is untouched.
        original = graph.get_state(history[0].config)
        assert [m.content for m in original.values["messages"]][-1] == "reply to two"

    def test_an_async_graph_uses_the_async_methods(self, saver: ConvstoreSaver) -> None:
        graph = chat_graph(saver)

        async def run() -> list[str]:
            config: RunnableConfig = {"configurable": {"thread_id": "a"}}
            await graph.ainvoke({"messages": [HumanMessage("x")]}, config)
            out = await graph.ainvoke({"messages": [HumanMessage("y")]}, config)
            states = [s async for s in graph.aget_state_history(config)]
            assert len(states) == 6
            return [m.content for m in out["messages"]]

        assert asyncio.run(run()) == ["x", "reply to x", "y", "reply to y"]

    def test_a_node_that_edits_an_old_message_in_place_is_stored_as_edited(
        self, saver: ConvstoreSaver
    ) -> None:
        def bot(state: MessagesState) -> dict[str, Any]:
            if len(state["messages"]) > 2:
                state["messages"][0].content = "edited in place"
            return {"messages": [AIMessage(content="ok", id=f"ai-{len(state['messages'])}")]}

        builder = StateGraph(MessagesState)
        builder.add_node("bot", bot)
        builder.add_edge(START, "bot")
        builder.add_edge("bot", END)
        graph = builder.compile(checkpointer=saver)
        config: RunnableConfig = {"configurable": {"thread_id": "m"}}
        graph.invoke({"messages": [HumanMessage("original", id="h1")]}, config, durability="sync")
        graph.invoke({"messages": [HumanMessage("next", id="h2")]}, config, durability="sync")
        reread = ConvstoreSaver(saver.store).get_tuple(config)
        assert reread is not None
        assert reread.checkpoint["channel_values"]["messages"][0].content == "edited in place"

    def test_a_second_process_reads_the_thread_the_first_wrote(self, store_path: Path) -> None:
        with Store(store_path) as store:
            talk(chat_graph(ConvstoreSaver(store)), "user/42", "from process one")
        code = (
            "import sys\n"
            "from convstore.integrations.langgraph import ConvstoreSaver\n"
            "with ConvstoreSaver(sys.argv[1]) as s:\n"
            "    t = s.get_tuple({'configurable': {'thread_id': 'user/42'}})\n"
            "    print('|'.join(m.content for m in t.checkpoint['channel_values']['messages']))\n"
        )
        done = run_python(code, str(store_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "from process one|reply to from process one"


class TestThreadIds:
    @pytest.mark.parametrize(
        ("thread_id", "session_id"),
        [
            ("thread-1", "thread-1"),
            ("user/42", "ext-e-user_2f42"),
            ("../x", "ext-e-_2e_2e_2fx"),
            ("ext-looks-encoded", "ext-e-ext-looks-encoded"),
            ("", "ext-e-"),
        ],
    )
    def test_each_thread_id_maps_to_one_session_folder_inside_the_store(
        self, saver: ConvstoreSaver, thread_id: str, session_id: str
    ) -> None:
        talk(chat_graph(saver), thread_id, "hi")
        assert saver.store.session_ids() == [session_id]
        listed = list(saver.list(None))
        assert {t.config["configurable"]["thread_id"] for t in listed} == {thread_id}
        assert not (saver.store.path.parent / "x").exists()

    def test_a_thread_id_too_long_to_escape_is_hashed_and_still_listed(
        self, saver: ConvstoreSaver
    ) -> None:
        long_id = "tenant/" + "x" * 200
        talk(chat_graph(saver), long_id, "hi")
        [sid] = saver.store.session_ids()
        assert sid.startswith("ext-h-") and len(sid) == 38
        assert next(t.config["configurable"]["thread_id"] for t in saver.list(None)) == long_id

    def test_threads_whose_ids_differ_only_by_escaping_stay_apart(
        self, saver: ConvstoreSaver
    ) -> None:
        graph = chat_graph(saver)
        talk(graph, "a/b", "slash")
        talk(graph, "a_2fb", "underscore")
        talk(graph, "ext-e-a_2fb", "prefix")
        contents = {
            t.config["configurable"]["thread_id"]: t.checkpoint["channel_values"]["messages"][
                0
            ].content
            for t in saver.list(None)
            if t.metadata.get("step") == 1
        }
        assert contents == {"a/b": "slash", "a_2fb": "underscore", "ext-e-a_2fb": "prefix"}

    def test_a_thread_whose_session_was_deleted_is_refused_with_the_reason(
        self, saver: ConvstoreSaver
    ) -> None:
        talk(chat_graph(saver), "gone", "hi")
        saver.store.delete_session("gone")
        with pytest.raises(SessionExists, match="deleted session ids are never reused"):
            talk(chat_graph(saver), "gone", "again")


class TestStorage:
    def test_a_step_late_in_a_long_thread_writes_no_more_than_an_early_one(
        self, saver: ConvstoreSaver
    ) -> None:
        graph = chat_graph(saver, replies=["x" * 400] * 200)
        config: RunnableConfig = {"configurable": {"thread_id": "long"}}
        sizes = []
        for i in range(60):
            graph.invoke({"messages": [HumanMessage("y" * 400 + str(i))]}, config)
            sizes.append(session_bytes(saver.store.path))
        early = sizes[9] - sizes[4]
        late = sizes[59] - sizes[54]
        assert late < early * 1.3, (early, late)
        # 120 messages of ~400 bytes: a full copy of the list per step would be ~2.9 MB.
        full_copies = sum(400 * k for k in range(1, 121))
        assert sizes[-1] < full_copies / 10

    def test_the_message_a_node_wrote_is_stored_once_for_its_write_and_its_checkpoint(
        self, saver: ConvstoreSaver
    ) -> None:
        marker = "unrepeatable " * 100
        talk(chat_graph(saver, replies=[marker]), "once", "hi")
        copies = 0
        for path in (saver.store.path / "sessions" / "once").glob("hot.*"):
            for _, _, payload in frames.scan(path.read_bytes(), 0).frames:
                for record in frames.decode_records(payload):
                    data = record.get("data")
                    if record["kind"] == "blob" and isinstance(data, list) and len(data) == 2:
                        value = saver.serde.loads_typed((data[0], base64.b64decode(data[1])))
                        found = value if isinstance(value, list) else [value]
                        copies += sum(
                            isinstance(v, AIMessage) and v.content == marker for v in found
                        )
        assert copies == 1

    def test_checkpoint_metadata_that_is_not_json_is_refused_and_nothing_is_written(
        self, saver: ConvstoreSaver
    ) -> None:
        put_raw(saver, "meta", None, {}, {})
        before = session_bytes(saver.store.path)
        with pytest.raises(InvalidContent, match="checkpoint metadata cannot be stored as JSON"):
            put_raw(saver, "meta", None, {}, {}, metadata={"step": 1, "bad": object()})
        assert session_bytes(saver.store.path) == before


class TestDeleting:
    def test_pruning_to_the_latest_keeps_its_full_message_list(self, saver: ConvstoreSaver) -> None:
        graph = chat_graph(saver)
        expected = talk(graph, "p", "a", "b", "c")
        saver.prune(["p"], strategy="keep_latest")
        config: RunnableConfig = {"configurable": {"thread_id": "p"}}
        assert len(list(saver.list(config))) == 1
        after = ConvstoreSaver(saver.store).get_tuple(config)
        assert after is not None
        assert after.checkpoint["channel_values"]["messages"] == expected
        assert [m.content for m in talk(graph, "p", "d")][-2:] == ["d", "reply to d"]

    def test_deleting_a_run_in_the_middle_leaves_later_checkpoints_readable(
        self, saver: ConvstoreSaver
    ) -> None:
        first = put_raw(saver, "r", None, {"log": ["a"]}, {"log": 1}, {"run_id": "r1"})
        second = put_raw(saver, "r", first, {"log": ["a", "b"]}, {"log": 2}, {"run_id": "r2"})
        third = put_raw(saver, "r", second, {"log": ["a", "b", "c"]}, {"log": 3}, {"run_id": "r3"})
        saver.delete_for_runs(["r1", "r2"])
        fresh = ConvstoreSaver(saver.store)
        got = fresh.get_tuple({"configurable": {"thread_id": "r", "checkpoint_id": third}})
        assert got is not None
        assert got.checkpoint["channel_values"]["log"] == ["a", "b", "c"]
        assert [t.checkpoint["id"] for t in fresh.list({"configurable": {"thread_id": "r"}})] == [
            third
        ]

    def test_a_deleted_thread_can_be_used_again_from_scratch(self, saver: ConvstoreSaver) -> None:
        graph = chat_graph(saver)
        talk(graph, "again", "old")
        saver.delete_thread("again")
        assert saver.get_tuple({"configurable": {"thread_id": "again"}}) is None
        assert [m.content for m in talk(graph, "again", "new")] == ["new", "reply to new"]

    def test_a_copy_is_independent_of_its_source(self, saver: ConvstoreSaver) -> None:
        graph = chat_graph(saver)
        expected = talk(graph, "src", "a", "b")
        saver.copy_thread("src", "dst")
        saver.delete_thread("src")
        copied = saver.get_tuple({"configurable": {"thread_id": "dst"}})
        assert copied is not None
        assert copied.checkpoint["channel_values"]["messages"] == expected

    def test_an_unknown_prune_strategy_is_refused(self, saver: ConvstoreSaver) -> None:
        with pytest.raises(InvalidInput, match="'keep_latest' or 'delete'"):
            saver.prune(["x"], strategy="keep_some")

    def test_a_config_without_a_thread_id_is_refused(self, saver: ConvstoreSaver) -> None:
        with pytest.raises(InvalidInput, match=r"configurable\.thread_id"):
            saver.get_tuple({"configurable": {}})


def _extend(state: list[str], writes: Sequence[list[str]]) -> list[str]:
    out = list(state)
    for w in writes:
        out.extend(w)
    return out


class DeltaState(TypedDict):
    log: Annotated[list[str], DeltaChannel(_extend, snapshot_frequency=4)]
    steps: Annotated[int, operator.add]


class TestDeltaChannel:
    def test_pruning_a_paused_run_keeps_what_a_delta_channel_replays_from(
        self, saver: ConvstoreSaver
    ) -> None:
        # A run paused before "b" ends on a checkpoint that holds no snapshot of "log": its
        # value is rebuilt from the writes of the ancestors back to the last snapshot.
        def a(state: DeltaState) -> dict[str, Any]:
            return {"log": [f"a{state['steps']}"], "steps": 1}

        def b(state: DeltaState) -> dict[str, Any]:
            return {"log": [f"b{state['steps']}"], "steps": 1}

        builder = StateGraph(DeltaState)
        builder.add_node("a", a)
        builder.add_node("b", b)
        builder.add_edge(START, "a")
        builder.add_edge("a", "b")
        builder.add_edge("b", END)
        graph = builder.compile(checkpointer=saver, interrupt_before=["b"])
        config: RunnableConfig = {"configurable": {"thread_id": "delta"}}
        for _ in range(3):
            graph.invoke({"log": [], "steps": 0}, config)
            graph.invoke(None, config)
        graph.invoke({"log": [], "steps": 0}, config)
        before = graph.get_state(config).values
        assert before["log"] == ["a0", "b1", "a2", "b3", "a4", "b5", "a6"]
        total = len(list(saver.list(config)))
        saver.prune(["delta"], strategy="keep_latest")
        assert 1 < len(list(saver.list(config))) < total
        assert graph.get_state(config).values == before
        assert graph.invoke(None, config)["log"] == [*before["log"], "b7"]
