"""Bytes written per step: ConvstoreSaver against LangGraph's SqliteSaver, same graph, same run.

The graph is a chat: a ``messages`` channel with the ``add_messages`` reducer and one node that
appends the next message of the conversation (user and assistant turns of the deterministic
workload, ~700 bytes each; assistant messages carry an id and response metadata, as a chat
model's do). It loops until the conversation is over, so every step appends exactly one
message, and LangGraph saves that step's write and a checkpoint through the saver under test.

Both savers see the same calls. Bytes are what stays on disk at the end: the SQLite file after
folding its WAL in (``PRAGMA wal_checkpoint(TRUNCATE)``), and the convstore session folders
(segments only; the local ``.cache`` is derived and excluded). The per-step figure is the total
divided by the number of appended messages; the growth rows compare the first and the last
tenth of a long thread, which shows whether a step costs the same late in a thread as early.

Reproduce (from the repository root)::

    python -m benchmarks.langgraph_bytes                 # 40 threads, ~2,000 messages
    python -m benchmarks.langgraph_bytes --messages 500 --long 100   # a quicker run
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.workload import WorkMessage, messages

try:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import END, START, MessagesState, StateGraph
except ImportError as e:  # reported by main()
    MISSING: ImportError | None = e
else:
    MISSING = None


def _graph(checkpointer: Any, script: dict[str, list[WorkMessage]]) -> Any:
    def speak(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        thread = config["configurable"]["thread_id"]
        turn = script[thread][len(state["messages"])]
        if turn.role == "assistant":
            # A chat model's reply carries its id and response metadata.
            message: Any = AIMessage(
                content=turn.content,
                id=f"run-{thread}-{len(state['messages'])}",
                response_metadata=dict(turn.metadata),
            )
        elif turn.role == "system":
            message = SystemMessage(content=turn.content)
        else:
            message = HumanMessage(content=turn.content)
        return {"messages": [message]}

    def more(state: MessagesState, config: RunnableConfig) -> str:
        thread = config["configurable"]["thread_id"]
        return "speak" if len(state["messages"]) < len(script[thread]) else END

    builder = StateGraph(MessagesState)
    builder.add_node("speak", speak)
    builder.add_edge(START, "speak")
    builder.add_conditional_edges("speak", more, ["speak", END])
    return builder.compile(checkpointer=checkpointer)


def _folder_bytes(root: Path, skip: str | None = None) -> int:
    return sum(
        p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and (skip is None or skip not in p.parts)
    )


def _run(
    name: str,
    make: Callable[[Path], tuple[Any, Callable[[], int]]],
    folder: Path,
    script: dict[str, list[WorkMessage]],
) -> dict[str, Any]:
    saver, measure = make(folder)
    graph = _graph(saver, script)
    started = time.perf_counter()
    marks: list[tuple[int, int]] = []
    appended = 0
    for thread, turns in script.items():
        config = {"configurable": {"thread_id": thread}, "recursion_limit": 10 * len(turns) + 10}
        graph.invoke({"messages": []}, config)
        appended += len(turns)
        marks.append((appended, measure()))
    elapsed = time.perf_counter() - started
    total = measure()
    return {"name": name, "bytes": total, "messages": appended, "seconds": elapsed, "marks": marks}


def _sqlite(folder: Path) -> tuple[Any, Callable[[], int]]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "checkpoints.sqlite", check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()

    def measure() -> int:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return _folder_bytes(folder)

    return saver, measure


def _convstore(folder: Path) -> tuple[Any, Callable[[], int]]:
    from convstore import Store
    from convstore.integrations.langgraph import ConvstoreSaver

    saver = ConvstoreSaver(Store(folder))

    def measure() -> int:
        return _folder_bytes(folder / "sessions")

    return saver, measure


def _script(n: int, long: int) -> tuple[dict[str, list[WorkMessage]], dict[str, list[WorkMessage]]]:
    """The workload's conversations, and one long conversation of ``long`` messages."""
    threads: dict[str, list[WorkMessage]] = defaultdict(list)
    for m in messages(n):
        threads[m.session_id].append(m)
    stream = [m for m in messages(long, sessions=1, seed=11)]
    return dict(threads), {"long": stream}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="workload messages")
    parser.add_argument("--long", type=int, default=200, help="length of the long thread")
    args = parser.parse_args(argv)
    missing = MISSING
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401
    except ImportError as e:
        missing = e
    if missing is not None:
        print(f"needs langgraph and langgraph-checkpoint-sqlite: {missing}", file=sys.stderr)
        return 2
    chats, long_thread = _script(args.messages, args.long)
    print(
        f"workload: {sum(map(len, chats.values())):,} messages in {len(chats)} threads; "
        f"long thread: {args.long} messages"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("SqliteSaver", _sqlite), ("ConvstoreSaver", _convstore)):
            chat = _run(name, make, Path(tmp) / name / "chats", chats)
            tenth = max(1, args.long // 10)
            early = _run(
                name, make, Path(tmp) / name / "early", {"long": long_thread["long"][:tenth]}
            )
            full = _run(name, make, Path(tmp) / name / "long", long_thread)
            # The last tenth of the long thread: the whole thread minus all but its last tenth.
            most = _run(
                name, make, Path(tmp) / name / "most", {"long": long_thread["long"][:-tenth]}
            )
            rows.append(
                {
                    "name": name,
                    "per_message": chat["bytes"] / chat["messages"],
                    "seconds": chat["seconds"],
                    "first": early["bytes"] / tenth,
                    "last": (full["bytes"] - most["bytes"]) / tenth,
                    "long": full["bytes"] / args.long,
                }
            )
    print()
    print(f"{'saver':<16}{'bytes/step':>12}{'first 10%':>12}{'last 10%':>12}{'seconds':>10}")
    for r in rows:
        print(
            f"{r['name']:<16}{r['per_message']:>12,.0f}{r['first']:>12,.0f}"
            f"{r['last']:>12,.0f}{r['seconds']:>10.2f}"
        )
    sqlite, ours = rows
    print()
    print(
        f"SqliteSaver writes {sqlite['per_message'] / ours['per_message']:.1f}x the bytes per "
        f"step of ConvstoreSaver on the workload, and "
        f"{sqlite['last'] / ours['last']:.1f}x over the last tenth of a "
        f"{args.long}-message thread."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
