"""The peers convstore is measured against, each a real implementation behind one interface.

Every peer is a ``Peer``: ``setup(dir)`` opens it in an empty folder (or pass the folder to the
constructor), then ``append``, ``append_batch``, ``recent``, ``search``, ``bytes_on_disk`` and
``close``. Each uses its package the way its users do, with that package's default durability,
so a harness can drive convstore and every peer through the same calls.

Each peer, and what one ``append`` costs it in durability:

- ``SqliteChat``: SQLite as chat apps use it, rollback journal, one commit per message; fsync
  (synchronous=FULL, SQLite's default).
- ``SqliteWal``: the same schema in WAL mode with synchronous=NORMAL; no fsync per commit
  (only at WAL checkpoints).
- ``SqliteFts5``: the ``llm`` CLI's way, a table plus an external-content FTS5 index kept by
  triggers; fsync.
- ``AgentsSqliteSession``: OpenAI Agents SDK ``agents.SQLiteSession`` on a file; it sets WAL
  mode and keeps synchronous=FULL, so an fsync of the WAL.
- ``LangchainFileHistory``: ``FileChatMessageHistory``, one JSON file per session; no fsync,
  and the whole file is rewritten on every message.
- ``LanggraphSqliteSaver``: ``SqliteSaver``, a checkpoint holding the thread's full message
  list per message; WAL with synchronous=FULL, two commits (writes, then checkpoint).
- ``JsonlFsync``: one JSONL file per session, open-append-write-fsync per message.

A peer that needs an optional package imports it in ``setup`` and raises ``PeerUnavailable``
with the reason when it is missing, so the harness can report the skip.

``recent`` returns ``Turn(role, content)`` oldest first; ``search`` returns
``Hit(session_id, created_at, content)``. Only the SQLite peers can search (``LIKE`` for the
plain ones, ``MATCH`` for FTS5); the others raise ``NotImplementedError``.

Import it as ``benchmarks.peers`` (``python -m benchmarks.bench`` from the repository root);
run as a script it puts the repository root on ``sys.path`` itself. Self-check (500 messages,
every peer): ``python benchmarks/peers.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

if not __package__:
    # Run as a script (python benchmarks/peers.py): make the repository root importable, so
    # the workload is the module benchmarks.workload however the peers are run.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.workload import COMMON_WORD, WorkMessage, messages

if TYPE_CHECKING:
    from agents import SQLiteSession
    from langchain_community.chat_message_histories import FileChatMessageHistory
    from langchain_core.messages import BaseMessage
    from langgraph.checkpoint.base import BaseCheckpointSaver

__all__ = [
    "PEERS",
    "AgentsSqliteSession",
    "Hit",
    "JsonlFsync",
    "LangchainFileHistory",
    "LanggraphSqliteSaver",
    "Peer",
    "PeerUnavailable",
    "SqliteChat",
    "SqliteFts5",
    "SqliteWal",
    "Turn",
]


class PeerUnavailable(Exception):
    """A peer cannot run here (an optional package is missing); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Turn(NamedTuple):
    """One message as ``recent`` returns it."""

    role: str
    content: str


class Hit(NamedTuple):
    """One search result."""

    session_id: str
    created_at: str
    content: str


def iso(ts: datetime) -> str:
    """UTC ISO-8601 with 6 fractional digits and a Z: sorts as text in time order."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Peer(ABC):
    """One store under test. Open it with ``setup(dir)`` (or ``Peer(dir)``), close it once."""

    name: str = "peer"
    can_search: bool = False

    def __init__(self, directory: Path | None = None) -> None:
        self._dir: Path | None = None
        if directory is not None:
            self.setup(directory)

    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError(f"{self.name}: call setup(dir) first")
        return self._dir

    def setup(self, directory: Path) -> None:
        """Open the peer in ``directory`` (created if missing)."""
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._open()

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def append(self, msg: WorkMessage) -> None:
        """Store one message durably, as far as the peer's default durability goes."""

    def append_batch(self, msgs: Sequence[WorkMessage]) -> None:
        """Store many messages; peers without a batch call loop over ``append``."""
        for msg in msgs:
            self.append(msg)

    @abstractmethod
    def recent(self, session_id: str, n: int = 20) -> list[Turn]:
        """The last ``n`` messages of a session, oldest first."""

    def search(
        self,
        word: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int = 20,
    ) -> list[Hit]:
        """Messages containing ``word``, created in [since, until)."""
        raise NotImplementedError(f"{self.name} has no search")

    def bytes_on_disk(self) -> int:
        """Bytes of every file under the peer's folder, journals and WAL files included. It
        works after ``close()`` too, which is when a WAL-mode SQLite file has settled."""
        return _dir_bytes(self.dir)

    @abstractmethod
    def close(self) -> None:
        """Release files and connections; the folder stays for inspection."""

    def __enter__(self) -> Peer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- SQLite, three ways -----------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session_created ON messages (session_id, created_at);
"""

_UPSERT_SESSION = (
    "INSERT INTO sessions (id, created_at, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (session_id, role, content, metadata, created_at) VALUES (?, ?, ?, ?, ?)"
)


class SqliteChat(Peer):
    """SQLite as chat apps use it: sessions and messages tables, an index on
    (session_id, created_at), the default rollback journal with synchronous=FULL, and one
    commit per message (which fsyncs the journal and the database)."""

    name = "sqlite-chat"
    can_search = True
    filename = "chat.sqlite"
    schema = _SQLITE_SCHEMA

    def _open(self) -> None:
        # isolation_level=None: autocommit, so each BEGIN/COMMIT below is ours and visible.
        self.conn = sqlite3.connect(self.dir / self.filename, isolation_level=None)
        self._pragmas()
        self.conn.executescript(self.schema)

    def _pragmas(self) -> None:
        """SQLite's defaults: journal_mode=DELETE, synchronous=FULL."""

    def _rows(self, msgs: Sequence[WorkMessage]) -> list[tuple[str, str, str, str, str]]:
        return [
            (m.session_id, m.role, m.content, json.dumps(m.metadata), iso(m.created_at))
            for m in msgs
        ]

    def _write(self, msgs: Sequence[WorkMessage]) -> None:
        rows = self._rows(msgs)
        span: dict[str, tuple[str, str]] = {}
        for sid, *_, at in rows:
            span[sid] = (span[sid][0], at) if sid in span else (at, at)
        self.conn.execute("BEGIN")
        try:
            self.conn.executemany(_UPSERT_SESSION, [(sid, a, b) for sid, (a, b) in span.items()])
            self.conn.executemany(_INSERT_MESSAGE, rows)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def append(self, msg: WorkMessage) -> None:
        at = iso(msg.created_at)
        self.conn.execute("BEGIN")
        try:
            self.conn.execute(_UPSERT_SESSION, (msg.session_id, at, at))
            self.conn.execute(_INSERT_MESSAGE, self._rows([msg])[0])
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def append_batch(self, msgs: Sequence[WorkMessage]) -> None:
        if msgs:
            self._write(msgs)

    def recent(self, session_id: str, n: int = 20) -> list[Turn]:
        rows = self.conn.execute(
            "SELECT role, content FROM messages WHERE session_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (session_id, n),
        ).fetchall()
        return [Turn(role, content) for role, content in reversed(rows)]

    @staticmethod
    def _window(
        since: datetime | None, until: datetime | None, column: str
    ) -> tuple[str, list[str]]:
        sql, params = "", []
        if since is not None:
            sql += f" AND {column} >= ?"
            params.append(iso(since))
        if until is not None:
            sql += f" AND {column} < ?"
            params.append(iso(until))
        return sql, params

    def search(
        self,
        word: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int = 20,
    ) -> list[Hit]:
        """What a chat app without a full-text index does: ``LIKE '%word%'`` (a case-insensitive
        substring scan of every message), newest first."""
        where, params = self._window(since, until, "created_at")
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.conn.execute(
            "SELECT session_id, created_at, content FROM messages "
            f"WHERE content LIKE ? ESCAPE '\\'{where} ORDER BY created_at DESC LIMIT ?",
            [pattern, *params, limit],
        ).fetchall()
        return [Hit(*row) for row in rows]

    def close(self) -> None:
        self.conn.close()


class SqliteWal(SqliteChat):
    """The same schema in WAL mode with synchronous=NORMAL: a commit appends to the WAL with no
    fsync; fsync happens at WAL checkpoints, so a power cut can lose the last commits."""

    name = "sqlite-wal"
    filename = "chat-wal.sqlite"

    def _pragmas(self) -> None:
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")


class SqliteFts5(SqliteChat):
    """The ``llm`` CLI's way: a messages table plus an FTS5 table with ``content=`` pointing at
    it, kept current by insert/update/delete triggers (what sqlite-utils ``enable_fts(...,
    create_triggers=True)`` creates for llm). Rollback journal, one commit per message.

    ``search`` ranks with ``ORDER BY rank`` (BM25, best first); ``SqliteFts5(latest=True)``
    orders newest first instead, like ``llm logs -q ... --latest``. ``created_at`` is not in
    the FTS index, so a date window is a WHERE on the joined table."""

    name = "sqlite-fts5"
    filename = "fts5.sqlite"
    schema = (
        _SQLITE_SCHEMA
        + """
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5 (content, content=messages);
CREATE TRIGGER IF NOT EXISTS messages_ai AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_ad AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
        VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER IF NOT EXISTS messages_au AFTER UPDATE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
        VALUES ('delete', old.rowid, old.content);
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
"""
    )

    def __init__(self, directory: Path | None = None, *, latest: bool = False) -> None:
        self.latest = latest
        self.name = "sqlite-fts5-latest" if latest else "sqlite-fts5"
        super().__init__(directory)

    def search(
        self,
        word: str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int = 20,
    ) -> list[Hit]:
        where, params = self._window(since, until, "m.created_at")
        order = "m.created_at DESC" if self.latest else "messages_fts.rank"
        # A quoted FTS5 string: the word is matched as a token, never parsed as query syntax.
        query = '"' + word.replace('"', '""') + '"'
        rows = self.conn.execute(
            "SELECT m.session_id, m.created_at, m.content FROM messages AS m "
            "JOIN messages_fts ON messages_fts.rowid = m.id "
            f"WHERE messages_fts MATCH ?{where} ORDER BY {order} LIMIT ?",
            [query, *params, limit],
        ).fetchall()
        return [Hit(*row) for row in rows]


# --- OpenAI Agents SDK --------------------------------------------------------------------------


class AgentsSqliteSession(Peer):
    """OpenAI Agents SDK ``agents.SQLiteSession(session_id, db_path)`` on one file.

    Its methods are coroutines that run the SQLite work in ``asyncio.to_thread``, and it keeps
    one connection per (session object, thread). The peer holds one event loop whose default
    executor has a single thread, so each session object has one connection, and keeps at most
    ``max_open`` session objects open (least recently used closed first), as an app opening a
    session per conversation would; otherwise a million-message run would hold a file
    descriptor per session. A call on a session that is not open pays for opening it
    (connect, WAL pragma, schema check: about 0.4 ms here). SQLiteSession sets
    journal_mode=WAL and keeps synchronous=FULL, so each ``add_items`` commit fsyncs the WAL."""

    name = "agents-sqlitesession"
    max_open = 256

    def _open(self) -> None:
        try:
            from agents import SQLiteSession
        except ImportError as e:
            raise PeerUnavailable(f"openai-agents is not installed ({e})") from e
        self._cls = SQLiteSession
        self._path = self.dir / "agents.sqlite"
        self._sessions: OrderedDict[str, SQLiteSession] = OrderedDict()
        self._loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agents-peer")
        self._loop.set_default_executor(self._executor)

    def _session(self, session_id: str) -> SQLiteSession:
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= self.max_open:
                _, oldest = self._sessions.popitem(last=False)
                oldest.close()
            session = self._cls(session_id, self._path)
            self._sessions[session_id] = session
        else:
            self._sessions.move_to_end(session_id)
        return session

    def append(self, msg: WorkMessage) -> None:
        item: Any = {"role": msg.role, "content": msg.content}
        self._loop.run_until_complete(self._session(msg.session_id).add_items([item]))

    def append_batch(self, msgs: Sequence[WorkMessage]) -> None:
        by_session: dict[str, list[Any]] = defaultdict(list)
        for m in msgs:
            by_session[m.session_id].append({"role": m.role, "content": m.content})
        for sid, items in by_session.items():
            self._loop.run_until_complete(self._session(sid).add_items(items))

    def recent(self, session_id: str, n: int = 20) -> list[Turn]:
        items = self._loop.run_until_complete(self._session(session_id).get_items(limit=n))
        out: list[Turn] = []
        for item in items:
            d: dict[str, Any] = dict(item)
            out.append(Turn(str(d.get("role", "")), str(d.get("content", ""))))
        return out

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        self._loop.close()
        self._executor.shutdown(wait=True)


# --- LangChain ----------------------------------------------------------------------------------

_LC_ROLE = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def _to_langchain(msg: WorkMessage) -> BaseMessage:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    if msg.role == "assistant":
        return AIMessage(content=msg.content, response_metadata=dict(msg.metadata))
    if msg.role == "system":
        return SystemMessage(content=msg.content)
    return HumanMessage(content=msg.content)


def _from_langchain(m: BaseMessage) -> Turn:
    return Turn(_LC_ROLE.get(m.type, m.type), m.content if isinstance(m.content, str) else "")


def _langchain_missing(e: ImportError) -> PeerUnavailable:
    return PeerUnavailable(f"langchain-core / langchain-community are not installed ({e})")


class LangchainFileHistory(Peer):
    """``langchain_community.chat_message_histories.FileChatMessageHistory``, one JSON file per
    session. ``add_message`` reads and parses the whole file, appends, and rewrites it with
    ``Path.write_text`` (no fsync), so a session's n-th message costs O(n); ``add_messages``
    is the base class loop over ``add_message``. ``recent`` is ``.messages[-n:]``, which parses
    the whole file."""

    name = "langchain-filehistory"

    def _open(self) -> None:
        try:
            import warnings

            with warnings.catch_warnings():
                # langchain-community announces its sunset on import; the class still works.
                warnings.simplefilter("ignore", DeprecationWarning)
                from langchain_community.chat_message_histories import FileChatMessageHistory
            import langchain_core.messages  # noqa: F401
        except ImportError as e:
            raise _langchain_missing(e) from e
        self._cls = FileChatMessageHistory
        self._histories: dict[str, FileChatMessageHistory] = {}
        (self.dir / "sessions").mkdir(exist_ok=True)

    def _history(self, session_id: str) -> FileChatMessageHistory:
        history = self._histories.get(session_id)
        if history is None:
            # The object holds only a path; constructing it creates the file with "[]".
            history = self._cls(str(self.dir / "sessions" / f"{session_id}.json"))
            self._histories[session_id] = history
        return history

    def append(self, msg: WorkMessage) -> None:
        self._history(msg.session_id).add_message(_to_langchain(msg))

    def append_batch(self, msgs: Sequence[WorkMessage]) -> None:
        by_session: dict[str, list[BaseMessage]] = defaultdict(list)
        for m in msgs:
            by_session[m.session_id].append(_to_langchain(m))
        for sid, lc_msgs in by_session.items():
            self._history(sid).add_messages(lc_msgs)

    def recent(self, session_id: str, n: int = 20) -> list[Turn]:
        return [_from_langchain(m) for m in self._history(session_id).messages[-n:]]

    def close(self) -> None:
        self._histories.clear()


# --- LangGraph ----------------------------------------------------------------------------------


class LanggraphSqliteSaver(Peer):
    """``langgraph.checkpoint.sqlite.SqliteSaver`` driven as a LangGraph chat app drives it.

    A graph with a ``messages`` channel (the ``add_messages`` reducer) saves after every step a
    checkpoint whose ``channel_values`` hold the thread's whole message list. Each append here
    is one such step: ``get_tuple`` loads the thread's latest checkpoint (as the Pregel loop
    does at the start of a run), ``put_writes`` records the node's write (the new message)
    against it, and ``put`` stores the next checkpoint with the full list. That is why the
    bytes written per message grow with the thread's length. SqliteSaver sets WAL mode and
    keeps synchronous=FULL, and commits ``put_writes`` and ``put`` separately."""

    name = "langgraph-sqlitesaver"

    def _open(self) -> None:
        try:
            from langgraph.checkpoint.base import empty_checkpoint
            from langgraph.checkpoint.sqlite import SqliteSaver
        except ImportError as e:
            raise PeerUnavailable(f"langgraph-checkpoint-sqlite is not installed ({e})") from e
        try:
            import langchain_core.messages  # noqa: F401
        except ImportError as e:
            raise _langchain_missing(e) from e
        self._empty_checkpoint = empty_checkpoint
        self._path = self.dir / "checkpoints.sqlite"
        # check_same_thread=False as its docs show; SqliteSaver serialises use with a lock.
        self.conn = sqlite3.connect(self._path, check_same_thread=False)
        # Typed as the base class: _step uses only the BaseCheckpointSaver API, so a subclass
        # can drive another saver through the same chat steps.
        self.saver: BaseCheckpointSaver[Any] = SqliteSaver(self.conn)
        self.saver.setup()
        self.steps = 0

    @staticmethod
    def _config(thread_id: str, checkpoint_id: str | None = None) -> Any:
        configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        return {"configurable": configurable}

    def _step(self, thread_id: str, new: list[BaseMessage]) -> None:
        saver = self.saver
        prev = saver.get_tuple(self._config(thread_id))
        if prev is None:
            base = self._empty_checkpoint()
            history: list[BaseMessage] = []
            parent_config = self._config(thread_id)
            step = -1
        else:
            base = prev.checkpoint
            history = list(base["channel_values"].get("messages", []))
            parent_config = prev.config
            step = int(prev.metadata.get("step", -1)) if prev.metadata else -1
            # The node's output is saved as a pending write of the step that produced it.
            saver.put_writes(parent_config, [("messages", new)], task_id=str(uuid.uuid4()))
        current = base["channel_versions"].get("messages")
        version = saver.get_next_version(None if current is None else str(current), None)
        checkpoint = self._empty_checkpoint()
        checkpoint["channel_values"] = {"messages": history + new}
        checkpoint["channel_versions"] = {**base["channel_versions"], "messages": version}
        checkpoint["versions_seen"] = {"chatbot": {"messages": version}}
        checkpoint["updated_channels"] = ["messages"]
        metadata: Any = {
            "source": "input" if prev is None else "loop",
            "step": step + 1,
            "parents": {},
        }
        saver.put(parent_config, checkpoint, metadata, {"messages": version})
        self.steps += 1

    def append(self, msg: WorkMessage) -> None:
        self._step(msg.session_id, [_to_langchain(msg)])

    def append_batch(self, msgs: Sequence[WorkMessage]) -> None:
        """A step per message, as in ``append``: the checkpoint-per-step cost is the point."""
        for msg in msgs:
            self.append(msg)

    def recent(self, session_id: str, n: int = 20) -> list[Turn]:
        tup = self.saver.get_tuple(self._config(session_id))
        if tup is None:
            return []
        msgs: list[BaseMessage] = tup.checkpoint["channel_values"].get("messages", [])
        return [_from_langchain(m) for m in msgs[-n:]]

    def bytes_per_step(self) -> float:
        """Database bytes per appended message, measured on disk after folding the WAL into
        the database file (so it counts what stays, not WAL slack)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return _dir_bytes(self.dir) / max(1, self.steps)

    def close(self) -> None:
        self.conn.close()


# --- JSONL with fsync ---------------------------------------------------------------------------


class JsonlFsync(Peer):
    """One JSONL file per session; each append opens the file, writes one line, fsyncs and
    closes (and fsyncs the folder once when the file is created, so the name survives a power
    cut too). ``recent`` reads the file backwards from the end until it has n lines."""

    name = "jsonl-fsync"
    tail_block = 64 * 1024

    def _open(self) -> None:
        self._sessions = self.dir / "sessions"
        self._sessions.mkdir(exist_ok=True)
        self._known: set[str] = set()

    def _path(self, session_id: str) -> Path:
        return self._sessions / f"{session_id}.jsonl"

    @staticmethod
    def _line(msg: WorkMessage) -> bytes:
        record = {
            "role": msg.role,
            "content": msg.content,
            "created_at": iso(msg.created_at),
            "metadata": msg.metadata,
        }
        return (json.dumps(record, ensure_ascii=False) + "\n").encode()

    def _write(self, session_id: str, data: bytes) -> None:
        path = self._path(session_id)
        created = session_id not in self._known and not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            dfd = os.open(self._sessions, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._known.add(session_id)

    def append(self, msg: WorkMessage) -> None:
        self._write(msg.session_id, self._line(msg))

    def append_batch(self, msgs: Sequence[WorkMessage]) -> None:
        by_session: dict[str, list[bytes]] = defaultdict(list)
        for m in msgs:
            by_session[m.session_id].append(self._line(m))
        for sid, lines in by_session.items():
            self._write(sid, b"".join(lines))

    def recent(self, session_id: str, n: int = 20) -> list[Turn]:
        path = self._path(session_id)
        if not path.exists():
            return []
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            pos, tail = end, b""
            # n + 1 newlines: the last line ends with one, and we need n whole lines before it.
            while pos > 0 and tail.count(b"\n") <= n:
                step = min(self.tail_block, pos)
                pos -= step
                f.seek(pos)
                tail = f.read(step) + tail
        lines = tail.split(b"\n")[:-1]
        if pos > 0:
            lines = lines[1:]  # the first piece may be a partial line
        out = [json.loads(line) for line in lines[-n:]]
        return [Turn(r["role"], r["content"]) for r in out]

    def close(self) -> None:
        self._known.clear()


PEERS: tuple[type[Peer], ...] = (
    SqliteChat,
    SqliteWal,
    SqliteFts5,
    AgentsSqliteSession,
    LangchainFileHistory,
    LanggraphSqliteSaver,
    JsonlFsync,
)
"""Every peer, in the order the benchmarks report them."""


# --- self-check ---------------------------------------------------------------------------------


def _check(peer_cls: type[Peer], msgs: list[WorkMessage], root: Path) -> None:
    """Append every message one at a time, read every session back, search if it can."""
    peer = peer_cls()
    try:
        peer.setup(root / peer_cls.__name__)
    except PeerUnavailable as e:
        print(f"{peer_cls.__name__:<24} skipped: {e.reason}")
        return
    with peer:
        t0 = time.perf_counter()
        for m in msgs:
            peer.append(m)
        rate = len(msgs) / (time.perf_counter() - t0)
        expected: dict[str, list[Turn]] = defaultdict(list)
        for m in msgs:
            expected[m.session_id].append(Turn(m.role, m.content))
        times = []
        for sid, turns in expected.items():
            t0 = time.perf_counter()
            got = peer.recent(sid, 20)
            times.append(time.perf_counter() - t0)
            if got != turns[-20:]:
                raise AssertionError(f"{peer.name}: recent({sid!r}) differs from what was appended")
        extra = ""
        if peer.can_search:
            t0 = time.perf_counter()
            hits = peer.search(COMMON_WORD, limit=1000)
            ms = (time.perf_counter() - t0) * 1e3
            extra = f"  search {COMMON_WORD!r}: {len(hits)} hits in {ms:.2f} ms"
        if isinstance(peer, LanggraphSqliteSaver):
            extra += f"  {peer.bytes_per_step() / 1024:.1f} KiB/step"
    # Measured after close, when SQLite has folded its WAL back into the database.
    size = peer.bytes_on_disk()
    print(
        f"{peer.name:<22} {rate:>7,.0f} appends/s  recent p50 "
        f"{statistics.median(times) * 1e3:.3f} ms  {size / len(msgs):>6,.0f} B/msg{extra}"
    )


def main(argv: Iterable[str] = ()) -> int:
    n = int(next(iter(argv), "500"))
    msgs = list(messages(n))
    print(
        f"{n} workload messages in {len({m.session_id for m in msgs})} sessions, "
        f"mean {sum(len(m.content.encode()) for m in msgs) / n:.0f} B"
    )
    with tempfile.TemporaryDirectory(prefix="convstore-peers-") as tmp:
        for peer_cls in PEERS:
            _check(peer_cls, msgs, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
