"""Import conversations from other tools' exports and from convstore's own.

Formats (``docs/CLI.md`` describes each one and how it maps to sessions and messages):

- ``convstore``: convstore's own JSON export (``{"format": "convstore-export", "version": 1}``);
- ``chatgpt``: ChatGPT's ``conversations.json``. The ``mapping`` tree is kept whole: the path
  from the root to ``current_node`` is the session, every other branch becomes a branch session
  whose parent is the message it forked from;
- ``claude``: Claude's ``conversations.json`` (``chat_messages`` with ``sender``, ``text`` and
  ``content`` blocks, thinking included);
- ``openai``: generic OpenAI-style ``{role, content}`` messages, as JSON (a list of messages,
  ``{"messages": [...]}``, or a list of those) or JSONL (one message per line, or one
  conversation per line).

An import happens in two phases. The files are read, checked and turned into records in
memory; a malformed file raises :class:`ImportFormatError` naming the file, the position and
the reason, and nothing is written. Only then are the sessions written, one session at a time.

Import is idempotent. Session and message ids come from the source (or, when it has none, from
a hash of where the message sits in it), so importing a file again finds every session and
message present and adds nothing. A message with a given id is written with that id: it is the
only part of convstore that writes message records with chosen ids, which it does through the
store's own ``_write``, under the session lock, exactly as ``Session.extend`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from .errors import (
    CaseCollision,
    ImportFormatError,
    ImportTooLarge,
    InvalidInput,
    SessionExists,
)
from .ids import (
    fold_case,
    format_us,
    is_record_id,
    parse_us,
    to_us,
    validate_new_session_id,
)
from .records import (
    ROLES,
    Content,
    JSONDict,
    check_content,
    check_json,
    check_metadata,
    check_role,
    encode_record,
)
from .store import Store

FORMATS = ("auto", "convstore", "chatgpt", "claude", "openai")
EXPORT_FORMAT = "convstore-export"
EXPORT_VERSION = 1
# Claude marks the first message of a conversation with this parent.
_CLAUDE_ROOT = "00000000-0000-4000-8000-000000000000"
_SLUG = re.compile(r"[A-Za-z0-9_-]{1,40}")
_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Messages are written in frames of at most this many bytes of JSON, so a huge conversation
# does not need one huge compressed frame in memory.
_FRAME_BYTES = 8 * 1024 * 1024

Progress = Callable[[int, int], None]

# What an import may read (docs/CLI.md, "Import limits"). The heaviest real exports we know of
# hold a conversations.json of several hundred MB; 2 GiB leaves room for them while keeping a
# hostile file from filling memory. JSON deflates about 5 to 15 to 1; a zip bomb's member
# reaches 1000 to 1. Both are checked against the bytes actually read, never against the sizes
# a zip declares, which a hostile zip chooses.
MAX_IMPORT_BYTES = 2 * 1024**3
MAX_IMPORT_RATIO = 100
_CHUNK = 64 * 1024
# The ratio is judged only once this much came out: tiny members compress unevenly.
_RATIO_FLOOR = 1024 * 1024


# -- what an import plans to write -----------------------------------------------------------


@dataclass
class PlannedMessage:
    """A message ready to be written: its record is built and has been checked."""

    record: JSONDict
    where: str

    @property
    def id(self) -> str:
        return str(self.record["id"])


@dataclass
class PlannedState:
    id: str
    created_at: str
    value: Any


@dataclass
class PlannedSession:
    """A session ready to be written, with where it came from for error messages."""

    id: str
    where: str
    title: str | None = None
    user_id: str | None = None
    org_id: str | None = None
    agent_id: str | None = None
    metadata: JSONDict = field(default_factory=dict)
    created_at: str | None = None
    parent: JSONDict | None = None
    messages: list[PlannedMessage] = field(default_factory=list)
    state: PlannedState | None = None


@dataclass
class ImportReport:
    """What an import did."""

    files: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    sessions_added: int = 0
    sessions_skipped: int = 0
    messages_added: int = 0
    messages_skipped: int = 0
    states_added: int = 0
    added: list[str] = field(default_factory=list)

    def to_dict(self) -> JSONDict:
        return {
            "files": [{"path": p, "format": self.formats[p]} for p in self.files],
            "sessions_added": self.sessions_added,
            "sessions_skipped": self.sessions_skipped,
            "messages_added": self.messages_added,
            "messages_skipped": self.messages_skipped,
            "states_added": self.states_added,
            "added": list(self.added),
        }

    def __str__(self) -> str:
        return (
            f"{self.sessions_added} session(s) and {self.messages_added} message(s) added, "
            f"{self.sessions_skipped} session(s) and {self.messages_skipped} message(s) "
            "already present"
        )


# -- errors and positions ----------------------------------------------------------------------


class _Refusal(Exception):
    """A problem at a JSON path; turned into an ImportFormatError naming the file."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def _child(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    if _KEY.fullmatch(key):
        return f"{where}.{key}" if where else key
    return f"{where}[{orjson.dumps(key).decode()}]"


def _refuse(file: str, where: str, reason: str) -> ImportFormatError:
    place = f"{file}: {where}" if where else file
    return ImportFormatError(f"{place}: {reason}; nothing was imported")


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Refusal(where, f"expected an object, found {_kind(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Refusal(where, f"expected a list, found {_kind(value)}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _Refusal(where, f"expected a string or null, found {_kind(value)}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


# -- reading files -----------------------------------------------------------------------------


def read_plan(
    path: str | Path,
    format: str = "auto",
    *,
    user_id: str | None = None,
    org_id: str | None = None,
    max_bytes: int = MAX_IMPORT_BYTES,
    max_ratio: float = MAX_IMPORT_RATIO,
) -> tuple[str, list[PlannedSession]]:
    """Read and check one file; return its format and the sessions it holds. Writes nothing.

    ``user_id``/``org_id`` fill in sessions that do not name their own. A file (or the
    conversations.json in a zip) larger than ``max_bytes`` once read, or a zip member that
    inflates more than ``max_ratio`` times, raises :class:`ImportTooLarge`.
    """
    if format not in FORMATS:
        raise InvalidInput(f"format {format!r} is not one of {', '.join(FORMATS)}")
    for name, value in (("user_id", user_id), ("org_id", org_id)):
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 256):
            raise InvalidInput(f"{name} must be a string of 1 to 256 characters, not {value!r:.60}")
    _check_limits(max_bytes, max_ratio)
    file = str(path)
    p = Path(path)
    try:
        # is_zipfile reads a pipe or a device (/dev/zero) to its end: regular files only.
        if p.is_file() and zipfile.is_zipfile(p):
            data, file = _read_zip(p, max_bytes, max_ratio)
        else:
            with open(p, "rb") as fh:
                data = _read_bounded(fh, file, max_bytes)
    except OSError as e:
        raise ImportFormatError(f"{file}: cannot read it: {e.strerror or e}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        del data[:3]
    try:
        if p.suffix.lower() in (".jsonl", ".ndjson"):
            fmt, sessions = "openai", _openai_jsonl(data, file, format)
        else:
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                if not _several_lines(data):
                    raise ImportFormatError(
                        f"{file}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg}); "
                        "nothing was imported"
                    ) from None
                fmt, sessions = "openai", _openai_jsonl(data, file, format)
            else:
                found = _detect(doc) if format == "auto" else format
                if found is None:
                    raise _Refusal(
                        "",
                        "cannot tell which export this is (expected a convstore export, a "
                        "ChatGPT or Claude conversations.json, or OpenAI-style messages); "
                        "pass --format",
                    )
                fmt = found
                sessions = _READERS[fmt](doc, _root_name(fmt))
    except _Refusal as r:
        raise _refuse(file, r.where, r.reason) from None
    for s in sessions:
        if s.user_id is None:
            s.user_id = user_id
        if s.org_id is None:
            s.org_id = org_id
    _check_unique(sessions, file)
    return fmt, sessions


def _check_limits(max_bytes: int, max_ratio: float) -> None:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise InvalidInput(f"max_bytes must be a positive integer, not {max_bytes!r}")
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, (int, float)) or max_ratio < 1:
        raise InvalidInput(f"max_ratio must be a number of at least 1, not {max_ratio!r}")


def _too_large(file: str, max_bytes: int) -> ImportTooLarge:
    return ImportTooLarge(
        f"{file}: holds more than {max_bytes:,} bytes, the import limit; if the file is "
        "genuine, raise it with --max-size (max_bytes= in Python); nothing was imported"
    )


def _read_bounded(
    fh: Any, file: str, max_bytes: int, counted: _Counted | None = None, max_ratio: float = 0
) -> bytearray:
    """Read ``fh`` in small chunks, counting what comes out (and, for a zip member, what went
    in), and stop as soon as a limit is passed: a bomb never gets into memory whole."""
    data = bytearray()
    start = counted.count if counted is not None else 0
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return data
        data += chunk
        if len(data) > max_bytes:
            raise _too_large(file, max_bytes)
        if counted is not None and len(data) > _RATIO_FLOOR:
            packed = max(counted.count - start, 1)
            if len(data) > max_ratio * packed:
                raise ImportTooLarge(
                    f"{file}: {packed:,} compressed bytes inflated to over {len(data):,} "
                    f"(more than {max_ratio:g} to 1, the limit: a zip bomb?); if the file is "
                    "genuine, raise the limit with --max-ratio (max_ratio= in Python); "
                    "nothing was imported"
                )


class _Counted:
    """A file that counts the bytes read from it: the compressed bytes a zip member used."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._fh.read(n)
        self.count += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._fh.seek(offset, whence))

    def tell(self) -> int:
        return int(self._fh.tell())

    def seekable(self) -> bool:
        return True


def _read_zip(p: Path, max_bytes: int, max_ratio: float) -> tuple[bytearray, str]:
    """ChatGPT and Claude hand out a zip with conversations.json inside."""
    with open(p, "rb") as raw:
        counted = _Counted(raw)
        try:
            with zipfile.ZipFile(counted) as zf:
                names = [
                    i
                    for i in zf.infolist()
                    if i.filename.rsplit("/", 1)[-1] == "conversations.json"
                ]
                if not names:
                    raise ImportFormatError(
                        f"{p}: the zip has no conversations.json; unzip it and import the JSON "
                        "file in it; nothing was imported"
                    )
                info = names[0]
                file = f"{p}:{info.filename}"
                with zf.open(info) as member:
                    return _read_bounded(member, file, max_bytes, counted, max_ratio), file
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as e:
            raise ImportFormatError(
                f"{p}: the zip is damaged or uses a compression convstore cannot read ({e}); "
                "nothing was imported"
            ) from None


def _several_lines(data: bytes | bytearray) -> bool:
    """A .json file that is really JSON lines: its first line is a whole JSON value."""
    first, _, rest = data.strip().partition(b"\n")
    try:
        orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return bool(rest.strip())


def _detect(doc: Any) -> str | None:
    if isinstance(doc, dict):
        if doc.get("format") == EXPORT_FORMAT:
            return "convstore"
        if "messages" in doc:
            return "openai"
        if "mapping" in doc:
            return "chatgpt"
        if "chat_messages" in doc:
            return "claude"
        return None
    if isinstance(doc, list):
        if not doc:
            return "openai"
        first = doc[0]
        if isinstance(first, dict):
            if "mapping" in first:
                return "chatgpt"
            if "chat_messages" in first:
                return "claude"
            if "messages" in first or "role" in first:
                return "openai"
        if isinstance(first, list):
            return "openai"
    return None


def _root_name(fmt: str) -> str:
    return {"chatgpt": "conversations", "claude": "conversations"}.get(fmt, "")


def _check_unique(sessions: list[PlannedSession], file: str) -> None:
    seen: dict[str, str] = {}
    folded: dict[str, PlannedSession] = {}
    for s in sessions:
        if s.id in seen:
            raise _refuse(file, s.where, f"session id {s.id!r} is also used at {seen[s.id]}")
        seen[s.id] = s.where
        twin = folded.setdefault(fold_case(s.id), s)
        if twin is not s:
            raise _refuse(file, s.where, _twins(s.id, twin.id, twin.where))
        ids: dict[str, str] = {}
        for m in s.messages:
            if m.id in ids:
                raise _refuse(file, m.where, f"message id {m.id!r} is also used at {ids[m.id]}")
            ids[m.id] = m.where


# -- shared building blocks ----------------------------------------------------------------------


def _twins(sid: str, other: str, where: str) -> str:
    return (
        f"session id {sid!r} differs only by case from {other!r} at {where}; on macOS and "
        "Windows both would be one folder"
    )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def derive_id(identity: str, at_us: int | None, seq: int | None = None) -> str:
    """A deterministic record id: the time (when the source has one) then a hash of identity.

    The same source message always gets the same id, which is what makes import idempotent.
    ``seq`` (the message's position) goes before the hash when messages may share a time:
    readers order messages by (time, id), so equal times keep the order of the file.
    """
    digest = _sha(identity)
    if at_us is None:
        return digest[:26]
    if seq is not None:
        return f"{at_us & 0xFFFFFFFFFFFFFF:014x}{seq & 0xFFFFFF:06x}{digest[:6]}"
    return f"{at_us & 0xFFFFFFFFFFFFFF:014x}{digest[:12]}"


def _session_id(raw: Any, prefix: str, fallback: str) -> str:
    """The source's id when it is a valid session id, else a stable hash-based one."""
    if isinstance(raw, str) and raw:
        try:
            return validate_new_session_id(raw)
        except InvalidInput:
            return f"{prefix}-{_sha(raw)[:24]}"
    return f"{prefix}-{_sha(fallback)[:24]}"


def _time(value: Any, where: str) -> int | None:
    """Microseconds from an ISO string or epoch seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Refusal(where, "expected a time, found a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not 0 <= value < 253402300800:
            raise _Refusal(where, f"{value!r} is not a time in seconds since 1970")
        return round(value * 1_000_000)
    if isinstance(value, str):
        try:
            return parse_us(value)
        except InvalidInput:
            pass
        try:
            return to_us(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            raise _Refusal(where, f"{value!r} is not an ISO-8601 time") from None
    raise _Refusal(where, f"expected a time, found {_kind(value)}")


def _message(
    sid: str,
    mid: str,
    role: str,
    content: Content,
    metadata: JSONDict,
    at_us: int,
    where: str,
    edited_us: int | None = None,
) -> PlannedMessage:
    try:
        record: JSONDict = {
            "id": mid,
            "kind": "message",
            "session": sid,
            "created_at": format_us(at_us),
            "role": check_role(role),
            "content": check_content(content),
        }
        meta = check_metadata(metadata)
        if meta:
            record["metadata"] = meta
        if edited_us is not None:
            # The form a sealed message takes once an edit is folded in (view.py): the id of
            # the edit is the content's version, so later edits, whose ids are newer, win.
            record["edit_id"] = derive_id(f"edit:{sid}:{mid}", edited_us)
            record["edited_at"] = format_us(edited_us)
        encode_record(record)
    except InvalidInput as e:
        raise _Refusal(where, str(e)) from None
    return PlannedMessage(record, where)


def _session(
    sid: str,
    where: str,
    *,
    title: Any = None,
    user_id: Any = None,
    org_id: Any = None,
    agent_id: Any = None,
    metadata: Any = None,
    created_us: int | None = None,
    parent: JSONDict | None = None,
) -> PlannedSession:
    for name, value, limit in (
        ("title", title, 1000),
        ("user_id", user_id, 256),
        ("org_id", org_id, 256),
        ("agent_id", agent_id, 256),
    ):
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise _Refusal(
                _child(where, name), f"must be a string of at most {limit} characters or null"
            )
    try:
        meta = check_metadata(metadata)
    except InvalidInput as e:
        raise _Refusal(_child(where, "metadata"), str(e)) from None
    return PlannedSession(
        sid,
        where,
        title=title,
        user_id=user_id,
        org_id=org_id,
        agent_id=agent_id,
        metadata=meta,
        created_at=None if created_us is None else format_us(created_us),
        parent=parent,
    )


# -- conversation trees (ChatGPT mapping, Claude parent_message_uuid) --------------------------


@dataclass
class _Node:
    id: str
    parent: str | None
    children: list[str]
    where: str
    # Set by the format reader when the node holds a message worth keeping: a function of the
    # node's (adjusted) time and the id of the session it lands in, returning the message.
    make: Callable[[int, str], PlannedMessage] | None = None
    time: int | None = None


def _tree_sessions(
    base: PlannedSession,
    nodes: dict[str, _Node],
    main_leaf: str | None,
    start_us: int,
) -> list[PlannedSession]:
    """Split a conversation tree into a main session and branch sessions.

    The path from the root to ``main_leaf`` is ``base``. Every other branch becomes a session
    of its own whose parent is the nearest message above its fork, in whichever session holds
    that message, so reading the branch shows exactly the conversation as it was on that branch.
    Along any path times never go backwards: a node without a time, or with one earlier than
    the message above it, is given that message's time plus one microsecond.
    """
    roots = [n.id for n in nodes.values() if n.parent is None or n.parent not in nodes]
    # The parent pointers are the truth; a children list only gives their order.
    kids: dict[str, list[str]] = {nid: [] for nid in nodes}
    for n in nodes.values():
        if n.parent is not None and n.parent in nodes:
            kids[n.parent].append(n.id)
    for n in nodes.values():
        listed = [c for c in dict.fromkeys(n.children) if c in nodes and nodes[c].parent == n.id]
        n.children = listed + [c for c in kids[n.id] if c not in listed]
    reached = _assign_times(nodes, roots, start_us)
    lost = [n for n in nodes.values() if n.id not in reached]
    if lost:
        raise _Refusal(lost[0].where, "the node is not reachable from the root (a cycle?)")

    if main_leaf is None or main_leaf not in nodes:
        main_leaf = _newest_leaf(nodes, roots)
    main_path: list[str] = []
    seen: set[str] = set()
    cur: str | None = main_leaf
    while cur is not None and cur in nodes:
        if cur in seen:
            raise _Refusal(nodes[cur].where, "the conversation tree has a cycle here")
        seen.add(cur)
        main_path.append(cur)
        cur = nodes[cur].parent
    main_path.reverse()

    owner: dict[str, str] = {}  # message id -> id of the session that holds it
    times: dict[str, str] = {}  # message id -> its created_at
    nearest: dict[str, str | None] = {}  # node id -> id of the nearest message at or above it
    sessions: list[PlannedSession] = []

    def fill(session: PlannedSession, path: list[str]) -> None:
        for nid in path:
            node = nodes[nid]
            assert node.time is not None  # _assign_times reached every node
            msg = node.make(node.time, session.id) if node.make else None
            above = nearest.get(node.parent) if node.parent is not None else None
            if msg is not None:
                session.messages.append(msg)
                owner[msg.id] = session.id
                times[msg.id] = msg.record["created_at"]
                nearest[nid] = msg.id
            else:
                nearest[nid] = above

    fill(base, main_path)
    sessions.append(base)
    # Branches, breadth first from the main line, so a branch's parent is always made first.
    queue: list[str] = list(main_path)
    on_path = set(main_path)
    starts: list[str] = []
    for r in roots:
        if r not in on_path:
            starts.append(r)
    i = 0
    while i < len(queue) or starts:
        if starts:
            start = starts.pop(0)
            path = _follow(nodes, start, seen)
            fork = nodes[start].parent
            above = nearest.get(fork) if fork is not None else None
            parent = None
            if above is not None:
                # As store.branch records it: the branch point's time too, so the branch keeps
                # its history should the parent later lose that message.
                parent = {"session": owner[above], "message": above, "created_at": times[above]}
            branch = PlannedSession(
                f"{base.id}.{_slug(start)}",
                nodes[start].where,
                title=f"{(base.title or base.id)[:990]} (branch)",
                user_id=base.user_id,
                org_id=base.org_id,
                agent_id=base.agent_id,
                metadata=dict(base.metadata),
                parent=parent,
            )
            if parent is None:
                branch.metadata["branch_of"] = base.id
            fill(branch, path)
            if branch.messages:
                branch.created_at = branch.messages[0].record["created_at"]
                sessions.append(branch)
            queue.extend(path)
            continue
        nid = queue[i]
        i += 1
        for c in nodes[nid].children:
            if c not in seen:
                starts.append(c)
    return sessions


def _follow(nodes: dict[str, _Node], start: str, seen: set[str]) -> list[str]:
    """The path from ``start`` down its newest children (a branch's own line)."""
    path = []
    cur: str | None = start
    while cur is not None:
        if cur in seen:
            raise _Refusal(nodes[cur].where, "the conversation tree has a cycle here")
        seen.add(cur)
        path.append(cur)
        kids = [c for c in nodes[cur].children if c not in seen]
        cur = kids[-1] if kids else None
    return path


def _assign_times(nodes: dict[str, _Node], roots: list[str], start_us: int) -> set[str]:
    stack = [(r, start_us - 1) for r in reversed(roots)]
    visited: set[str] = set()
    while stack:
        nid, floor = stack.pop()
        if nid in visited:
            raise _Refusal(nodes[nid].where, "the conversation tree has a cycle here")
        visited.add(nid)
        node = nodes[nid]
        if node.make is None:
            node.time = node.time if node.time is not None else floor
            below = floor
        else:
            if node.time is None or node.time <= floor:
                node.time = floor + 1
            below = node.time
        stack.extend((c, below) for c in reversed(node.children))
    return visited


def _newest_leaf(nodes: dict[str, _Node], roots: list[str]) -> str | None:
    leaves = [n for n in nodes.values() if not n.children]
    if not leaves:
        return roots[0] if roots else None
    return max(leaves, key=lambda n: (n.time or 0, n.id)).id


def _slug(node_id: str) -> str:
    return node_id if _SLUG.fullmatch(node_id) else _sha(node_id)[:16]


# -- ChatGPT ---------------------------------------------------------------------------------


def _chatgpt(doc: Any, root: str) -> list[PlannedSession]:
    if isinstance(doc, dict):
        doc = [doc]
    out: list[PlannedSession] = []
    for i, conv in enumerate(_list(doc, root)):
        out.extend(_chatgpt_conversation(conv, _child(root, i)))
    return out


def _chatgpt_conversation(conv: Any, where: str) -> list[PlannedSession]:
    conv = _obj(conv, where)
    mapping = _obj(conv.get("mapping"), _child(where, "mapping"))
    raw_id = conv.get("id") or conv.get("conversation_id")
    sid = _session_id(raw_id, "chatgpt", orjson.dumps(conv, option=orjson.OPT_SORT_KEYS).decode())
    ctime = _time(conv.get("create_time"), _child(where, "create_time"))
    utime = _time(conv.get("update_time"), _child(where, "update_time"))
    title = conv.get("title")
    if title is not None and not isinstance(title, str):
        raise _Refusal(_child(where, "title"), f"expected a string, found {_kind(title)}")
    nodes: dict[str, _Node] = {}
    first_time: int | None = None
    for key, raw in mapping.items():
        nwhere = _child(_child(where, "mapping"), key)
        node = _obj(raw, nwhere)
        parent = node.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise _Refusal(_child(nwhere, "parent"), "expected a node id or null")
        children = _list(node.get("children", []), _child(nwhere, "children"))
        if not all(isinstance(c, str) for c in children):
            raise _Refusal(_child(nwhere, "children"), "expected a list of node ids")
        n = _Node(key, parent, list(children), nwhere)
        message = node.get("message")
        if message is not None:
            mwhere = _child(nwhere, "message")
            message = _obj(message, mwhere)
            n.time = _time(message.get("create_time"), _child(mwhere, "create_time"))
            if n.time is not None and (first_time is None or n.time < first_time):
                first_time = n.time
            n.make = _chatgpt_maker(key, message, mwhere)
        nodes[key] = n
    start = ctime if ctime is not None else first_time if first_time is not None else utime
    if start is None:
        raise _Refusal(where, "no create_time on the conversation or any of its messages")
    current = conv.get("current_node")
    if current is not None and not isinstance(current, str):
        raise _Refusal(_child(where, "current_node"), "expected a node id or null")
    meta: JSONDict = {"source": "chatgpt"}
    if isinstance(conv.get("default_model_slug"), str):
        meta["model"] = conv["default_model_slug"]
    if conv.get("is_archived") is True:
        meta["archived"] = True
    base = _session(sid, where, title=title, metadata=meta, created_us=start)
    return _tree_sessions(base, nodes, current, start)


def _chatgpt_maker(
    node_id: str, message: dict[str, Any], where: str
) -> Callable[[int, str], PlannedMessage] | None:
    author = _obj(message.get("author", {}), _child(where, "author"))
    role = author.get("role")
    if not isinstance(role, str):
        raise _Refusal(_child(_child(where, "author"), "role"), "expected a role string")
    raw_content = message.get("content")
    content_where = _child(where, "content")
    content, lossy = _chatgpt_content(raw_content, content_where)
    meta_in = message.get("metadata") or {}
    if not isinstance(meta_in, dict):
        raise _Refusal(_child(where, "metadata"), f"expected an object, found {_kind(meta_in)}")
    source: JSONDict = {"id": node_id}
    if isinstance(raw_content, dict) and isinstance(raw_content.get("content_type"), str):
        source["content_type"] = raw_content["content_type"]
    if role not in ROLES:
        source["role"] = role
        role = "assistant"
    if meta_in.get("is_visually_hidden_from_conversation") is True:
        source["hidden"] = True
    if isinstance(author.get("name"), str):
        source["name"] = author["name"]
    recipient = message.get("recipient")
    if isinstance(recipient, str) and recipient != "all":
        source["recipient"] = recipient
    if lossy:
        source["content"] = raw_content
    metadata: JSONDict = {}
    if isinstance(meta_in.get("model_slug"), str):
        metadata["model"] = meta_in["model_slug"]
    metadata["chatgpt"] = source
    original_time = message.get("create_time")

    if content == "" or content == []:
        return None  # an empty node (the hidden system prompt, a blank tool step): no message

    def make(at_us: int, session_id: str) -> PlannedMessage:
        meta = dict(metadata)
        expected = None if original_time is None else _time(original_time, where)
        if expected != at_us:
            meta["chatgpt"] = {**source, "create_time": original_time}
        mid = derive_id(f"chatgpt:{session_id}:{node_id}", at_us)
        return _message(session_id, mid, role, content, meta, at_us, where)

    return make


def _chatgpt_content(raw: Any, where: str) -> tuple[Content, bool]:
    """A ChatGPT message's content as convstore content; True when some of it had no home."""
    if raw is None:
        return "", False
    raw = _obj(raw, where)
    kind = raw.get("content_type")
    if kind in ("text", None) and "parts" in raw:
        parts = _list(raw["parts"], _child(where, "parts"))
        texts = [p for p in parts if isinstance(p, str)]
        return "\n".join(texts), len(texts) != len(parts)
    if kind == "multimodal_text":
        parts = _list(raw.get("parts", []), _child(where, "parts"))
        out: list[JSONDict] = []
        lossy = False
        for j, part in enumerate(parts):
            pwhere = _child(_child(where, "parts"), j)
            if isinstance(part, str):
                if part:
                    out.append({"type": "text", "text": part})
            elif isinstance(part, dict):
                converted, lost = _chatgpt_part(part, pwhere)
                out.append(converted)
                lossy |= lost
            elif part is not None:
                raise _Refusal(pwhere, f"expected a string or an object, found {_kind(part)}")
        return out, lossy
    if kind == "code":
        text = raw.get("text")
        if not isinstance(text, str):
            raise _Refusal(_child(where, "text"), "a code message needs its text")
        lang = raw.get("language")
        lang = lang if isinstance(lang, str) and lang not in ("unknown", "") else ""
        return f"```{lang}\n{text}\n```", False
    if kind == "thoughts":
        thoughts = _list(raw.get("thoughts", []), _child(where, "thoughts"))
        out = []
        for j, t in enumerate(thoughts):
            t = _obj(t, _child(_child(where, "thoughts"), j))
            summary = t.get("summary") if isinstance(t.get("summary"), str) else None
            body = t.get("content") if isinstance(t.get("content"), str) else ""
            thought: JSONDict = {"type": "text", "text": body, "thinking": True}
            if summary:
                thought["summary"] = summary
            out.append(thought)
        return out, False
    if kind == "user_editable_context":
        # Custom instructions: hidden from the conversation, but what the model was told.
        texts = [raw.get(k) for k in ("user_profile", "user_instructions")]
        return "\n\n".join(t for t in texts if isinstance(t, str) and t), False
    if kind == "reasoning_recap":
        text = raw.get("content")
        if isinstance(text, str) and text:
            return [{"type": "text", "text": text, "thinking": True}], False
        return "", False
    for key in ("text", "result", "content"):
        if isinstance(raw.get(key), str):
            return raw[key], set(raw) - {"content_type", key} != set()
    if "parts" in raw and isinstance(raw["parts"], list):
        texts = [p for p in raw["parts"] if isinstance(p, str)]
        return "\n".join(texts), True
    # A content type we do not know: keep it whole in the metadata, with a visible marker.
    return f"[{kind or 'unknown content'}]", True


def _chatgpt_part(part: dict[str, Any], where: str) -> tuple[JSONDict, bool]:
    kind = part.get("content_type")
    if kind == "image_asset_pointer":
        pointer = part.get("asset_pointer")
        if not isinstance(pointer, str) or not pointer:
            raise _Refusal(_child(where, "asset_pointer"), "an image part needs its asset_pointer")
        image: JSONDict = {"type": "image", "url": pointer}
        for key in ("width", "height", "size_bytes"):
            if isinstance(part.get(key), int):
                image[key] = part[key]
        return image, False
    if kind == "audio_transcription" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"], "audio": True}, False
    text = part.get("text")
    return {
        "type": "text",
        "text": text if isinstance(text, str) else f"[{kind or 'attachment'}]",
        "chatgpt_part": part,
    }, False


# -- Claude ----------------------------------------------------------------------------------


def _claude(doc: Any, root: str) -> list[PlannedSession]:
    if isinstance(doc, dict):
        doc = [doc]
    out: list[PlannedSession] = []
    for i, conv in enumerate(_list(doc, root)):
        out.extend(_claude_conversation(conv, _child(root, i)))
    return out


def _claude_conversation(conv: Any, where: str) -> list[PlannedSession]:
    conv = _obj(conv, where)
    raw_id = conv.get("uuid")
    sid = _session_id(raw_id, "claude", orjson.dumps(conv, option=orjson.OPT_SORT_KEYS).decode())
    title = conv.get("name")
    if title == "":
        title = None
    ctime = _time(conv.get("created_at"), _child(where, "created_at"))
    meta: JSONDict = {"source": "claude"}
    account = conv.get("account")
    if isinstance(account, dict) and isinstance(account.get("uuid"), str):
        meta["account"] = account["uuid"]
    mwhere = _child(where, "chat_messages")
    messages = _list(conv.get("chat_messages", []), mwhere)
    nodes: dict[str, _Node] = {}
    previous: str | None = None
    tree = any(isinstance(m, dict) and "parent_message_uuid" in m for m in messages)
    first_time: int | None = None
    for j, raw in enumerate(messages):
        w = _child(mwhere, j)
        m = _obj(raw, w)
        uid = m.get("uuid")
        if not isinstance(uid, str) or not uid:
            uid = f"index-{j}"
        if uid in nodes:
            raise _Refusal(_child(w, "uuid"), f"message uuid {uid!r} appears twice")
        if tree:
            parent = m.get("parent_message_uuid")
            parent = None if parent in (None, _CLAUDE_ROOT) else parent
            if parent is not None and not isinstance(parent, str):
                raise _Refusal(_child(w, "parent_message_uuid"), "expected a message uuid")
        else:
            parent = previous
        node = _Node(uid, parent, [], w)
        node.time = _time(m.get("created_at"), _child(w, "created_at"))
        if node.time is not None and (first_time is None or node.time < first_time):
            first_time = node.time
        node.make = _claude_maker(uid, m, w)
        nodes[uid] = node
        previous = uid
    start = ctime if ctime is not None else first_time
    if start is None:
        raise _Refusal(where, "no created_at on the conversation or any of its messages")
    base = _session(sid, where, title=title, metadata=meta, created_us=start)
    leaf = conv.get("current_leaf_message_uuid")
    if not isinstance(leaf, str):
        leaf = previous
    return _tree_sessions(base, nodes, leaf, start)


def _claude_maker(uid: str, m: dict[str, Any], where: str) -> Callable[[int, str], PlannedMessage]:
    sender = m.get("sender")
    role = {"human": "user", "user": "user", "assistant": "assistant"}.get(str(sender))
    if role is None:
        raise _Refusal(
            _child(where, "sender"), f"sender {sender!r} is neither 'human' nor 'assistant'"
        )
    content = _claude_content(m, where)
    source: JSONDict = {"uuid": uid}
    files = m.get("files")
    if isinstance(files, list) and files:
        source["files"] = files
    original_time = m.get("created_at")
    edited = m.get("updated_at")

    def make(at_us: int, session_id: str) -> PlannedMessage:
        meta: JSONDict = {"claude": dict(source)}
        if original_time is None or _time(original_time, where) != at_us:
            meta["claude"]["created_at"] = original_time
        mid = derive_id(f"claude:{session_id}:{uid}", at_us)
        if isinstance(edited, str) and edited != original_time:
            meta["claude"]["updated_at"] = edited
        return _message(session_id, mid, role, content, meta, at_us, where)

    return make


def _claude_content(m: dict[str, Any], where: str) -> Content:
    cwhere = _child(where, "content")
    blocks = m.get("content")
    parts: list[JSONDict] = []
    if blocks is not None:
        for j, block in enumerate(_list(blocks, cwhere)):
            parts.extend(_claude_block(block, _child(cwhere, j)))
    if not parts:
        text = m.get("text")
        if text is not None and not isinstance(text, str):
            raise _Refusal(_child(where, "text"), f"expected a string, found {_kind(text)}")
        if text:
            parts.append({"type": "text", "text": text})
    attachments = m.get("attachments")
    if isinstance(attachments, list):
        for j, a in enumerate(attachments):
            a = _obj(a, _child(_child(where, "attachments"), j))
            name = a.get("file_name") if isinstance(a.get("file_name"), str) else "attachment"
            body = a.get("extracted_content")
            parts.append(
                {"type": "text", "text": body if isinstance(body, str) else "", "attachment": name}
            )
    if len(parts) == 1 and set(parts[0]) == {"type", "text"}:
        return str(parts[0]["text"])
    return parts if parts else ""


def _claude_block(block: Any, where: str) -> list[JSONDict]:
    block = _obj(block, where)
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise _Refusal(_child(where, "text"), "a text block needs its text")
        return [{"type": "text", "text": text}] if text else []
    if kind == "thinking":
        text = block.get("thinking")
        if not isinstance(text, str):
            raise _Refusal(_child(where, "thinking"), "a thinking block needs its text")
        return [{"type": "text", "text": text, "thinking": True}]
    if kind == "tool_use":
        call: JSONDict = {
            "type": "tool_call",
            "id": str(block.get("id") or ""),
            "name": str(block.get("name") or ""),
        }
        if "input" in block:
            call["arguments"] = block["input"]
        return [call]
    if kind == "tool_result":
        inner = block.get("content")
        if isinstance(inner, list):
            texts = [str(x.get("text", "")) for x in inner if isinstance(x, dict) and "text" in x]
            inner = "\n".join(texts)
        return [
            {
                "type": "tool_result",
                "tool_call_id": str(block.get("tool_use_id") or ""),
                "content": inner if isinstance(inner, str) else "",
            }
        ]
    if kind == "image":
        src = block.get("source")
        url = src.get("url") if isinstance(src, dict) else None
        if isinstance(url, str):
            return [{"type": "image", "url": url}]
    text = block.get("text")
    return [
        {
            "type": "text",
            "text": text if isinstance(text, str) else f"[{kind or 'block'}]",
            "claude_block": block,
        }
    ]


# -- OpenAI-style messages -------------------------------------------------------------------


def _openai(doc: Any, root: str) -> list[PlannedSession]:
    """A list of messages, {"messages": [...]}, or a list of either (several conversations)."""
    if isinstance(doc, dict):
        return [_openai_conversation(doc, root)]
    items = _list(doc, root)
    if not items:
        return []
    if all(isinstance(x, dict) and "role" in x for x in items):
        return [_openai_conversation(items, root)]
    return [_openai_conversation(x, _child(root, i)) for i, x in enumerate(items)]


def _openai_jsonl(data: bytes | bytearray, file: str, fmt: str) -> list[PlannedSession]:
    if fmt not in ("auto", "openai"):
        raise ImportFormatError(
            f"{file}: JSON lines are read as OpenAI-style messages only, not as {fmt}; "
            "nothing was imported"
        )
    values: list[tuple[int, Any]] = []
    lines: Sequence[bytes | bytearray] = data.split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append((n, orjson.loads(line)))
        except orjson.JSONDecodeError as e:
            raise ImportFormatError(
                f"{file}: line {n} column {e.colno}: not valid JSON ({e.msg}); nothing was imported"
            ) from None
    if not values:
        return []
    first = values[0][1]
    if isinstance(first, dict) and "session_id" in first and "message_id" in first:
        raise _Refusal(
            "line 1",
            "this is a convstore JSONL export, which is not re-importable; "
            "export with --format json and import that",
        )
    if isinstance(first, dict) and "role" in first:
        # One message per line: the whole file is one conversation.
        for n, v in values:
            if not isinstance(v, dict) or "role" not in v:
                raise _Refusal(f"line {n}", "expected a message with a role like line 1")
        return [_openai_conversation([v for _, v in values], "", lines=[n for n, _ in values])]
    return [_openai_conversation(v, f"line {n}") for n, v in values]


def _openai_conversation(
    raw: Any, where: str, *, lines: Sequence[int] | None = None
) -> PlannedSession:
    if isinstance(raw, list):
        conv: dict[str, Any] = {"messages": raw}
        mwhere = where
    else:
        conv = _obj(raw, where)
        mwhere = _child(where, "messages")
    messages = _list(conv.get("messages"), mwhere)
    raw_id = conv.get("id") or conv.get("session_id") or conv.get("conversation_id")
    identity = orjson.dumps(messages, option=orjson.OPT_SORT_KEYS).decode()
    sid = _session_id(raw_id, "chat", identity)
    ctime = _time(conv.get("created_at"), _child(where, "created_at"))
    metadata = conv.get("metadata")
    meta: JSONDict = dict(metadata) if isinstance(metadata, dict) else {}
    meta.setdefault("source", "openai")
    title = conv.get("title") if "title" in conv else conv.get("name")
    session = _session(
        sid,
        where or "messages",
        title=_opt_str(title, _child(where, "title")),
        user_id=_opt_str(conv.get("user_id"), _child(where, "user_id")),
        org_id=_opt_str(conv.get("org_id"), _child(where, "org_id")),
        agent_id=_opt_str(conv.get("agent_id"), _child(where, "agent_id")),
        metadata=meta,
        created_us=ctime,
    )
    # Messages without times get consecutive microseconds from the conversation's time, or
    # from now on the first import: their ids do not depend on it (see derive_id), so a
    # second import still recognises them.
    clock = ctime
    if clock is None:
        clock = _first_time(messages, mwhere)
    untimed = clock is None
    if clock is None:
        clock = to_us(datetime.now(timezone.utc))
        session.created_at = format_us(clock)
    floor = clock - 1
    for j, m in enumerate(messages):
        w = f"line {lines[j]}" if lines else _child(mwhere, j)
        m = _obj(m, w)
        at = _time(m.get("created_at", m.get("timestamp")), _child(w, "created_at"))
        if at is None or at <= floor:
            at = floor + 1
        floor = at
        role, content, meta_m = _openai_message(m, w)
        raw_mid = m.get("id")
        if isinstance(raw_mid, str) and is_record_id(raw_mid):
            mid = raw_mid
        else:
            key = raw_mid if isinstance(raw_mid, str) else j
            mid = derive_id(f"openai:{sid}:{key}", None if untimed else at)
        session.messages.append(_message(sid, mid, role, content, meta_m, at, w))
    if session.created_at is None and session.messages:
        session.created_at = session.messages[0].record["created_at"]
    return session


def _first_time(messages: list[Any], where: str) -> int | None:
    for j, m in enumerate(messages):
        if isinstance(m, dict):
            t = _time(
                m.get("created_at", m.get("timestamp")), _child(_child(where, j), "created_at")
            )
            if t is not None:
                return t
    return None


def _openai_message(m: dict[str, Any], where: str) -> tuple[str, Content, JSONDict]:
    role = m.get("role")
    if role == "function":
        role = "tool"
    if role not in ROLES:
        raise _Refusal(_child(where, "role"), f"role {role!r} is not one of {', '.join(ROLES)}")
    meta: JSONDict = {}
    raw_meta = m.get("metadata")
    if isinstance(raw_meta, dict):
        meta.update(raw_meta)
    if isinstance(m.get("name"), str):
        meta["name"] = m["name"]
    raw = m.get("content")
    cwhere = _child(where, "content")
    parts: list[JSONDict]
    if raw is None:
        parts = []
    elif isinstance(raw, str):
        parts = [{"type": "text", "text": raw}]
    else:
        parts = [_openai_part(p, _child(cwhere, k)) for k, p in enumerate(_list(raw, cwhere))]
    calls = m.get("tool_calls")
    if calls is not None:
        for k, call in enumerate(_list(calls, _child(where, "tool_calls"))):
            parts.append(_openai_tool_call(call, _child(_child(where, "tool_calls"), k)))
    if role == "tool" and isinstance(m.get("tool_call_id"), str):
        text = "\n".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")
        parts = [{"type": "tool_result", "tool_call_id": m["tool_call_id"], "content": text}]
    if len(parts) == 1 and set(parts[0]) == {"type", "text"}:
        return str(role), str(parts[0]["text"]), meta
    if not parts:
        return str(role), "", meta
    return str(role), parts, meta


def _openai_part(part: Any, where: str) -> JSONDict:
    part = _obj(part, where)
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _Refusal(_child(where, "text"), "a text part needs its text")
        return {"type": "text", "text": text}
    if kind in ("image_url", "input_image", "image"):
        url = part.get("image_url", part.get("url"))
        if isinstance(url, dict):
            url = url.get("url")
        if not isinstance(url, str):
            raise _Refusal(where, "an image part needs a url")
        return {"type": "image", "url": url}
    if kind in ("tool_call", "tool_result"):
        return dict(part)
    raise _Refusal(_child(where, "type"), f"part type {kind!r} is not text or an image")


def _openai_tool_call(call: Any, where: str) -> JSONDict:
    call = _obj(call, where)
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    name = fn.get("name")
    if not isinstance(name, str):
        raise _Refusal(_child(where, "function"), "a tool call needs a function name")
    args: Any = fn.get("arguments")
    if isinstance(args, str):
        with contextlib.suppress(orjson.JSONDecodeError):  # else kept as the model wrote it
            args = orjson.loads(args)
    return {"type": "tool_call", "id": str(call.get("id") or ""), "name": name, "arguments": args}


# -- convstore's own export ------------------------------------------------------------------


def _convstore(doc: Any, root: str) -> list[PlannedSession]:
    doc = _obj(doc, root)
    if doc.get("format") != EXPORT_FORMAT:
        raise _Refusal("format", f"expected {EXPORT_FORMAT!r}, found {doc.get('format')!r}")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _Refusal("version", "expected an integer format version")
    if version > EXPORT_VERSION:
        raise _Refusal(
            "version",
            f"the file is export version {version}; this convstore reads up to "
            f"{EXPORT_VERSION}. Upgrade convstore",
        )
    sessions = _list(doc.get("sessions"), "sessions")
    return [_convstore_session(s, _child("sessions", i)) for i, s in enumerate(sessions)]


def _convstore_session(raw: Any, where: str) -> PlannedSession:
    s = _obj(raw, where)
    sid = s.get("id")
    try:
        sid = validate_new_session_id(sid)
    except InvalidInput as e:
        raise _Refusal(_child(where, "id"), str(e)) from None
    created = _time(s.get("created_at"), _child(where, "created_at"))
    parent = s.get("parent")
    if parent is not None:
        pwhere = _child(where, "parent")
        parent = _obj(parent, pwhere)
        if not isinstance(parent.get("session"), str) or not isinstance(parent.get("message"), str):
            raise _Refusal(pwhere, 'expected {"session": id, "message": id} or null')
        kept = {"session": parent["session"], "message": parent["message"]}
        point = _time(parent.get("created_at"), _child(pwhere, "created_at"))
        if point is not None:
            kept["created_at"] = format_us(point)
        parent = kept
    session = _session(
        sid,
        where,
        title=s.get("title"),
        user_id=s.get("user_id"),
        org_id=s.get("org_id"),
        agent_id=s.get("agent_id"),
        metadata=s.get("metadata"),
        created_us=created,
        parent=parent,
    )
    mwhere = _child(where, "messages")
    for j, raw_m in enumerate(_list(s.get("messages", []), mwhere)):
        w = _child(mwhere, j)
        m = _obj(raw_m, w)
        at = _time(m.get("created_at"), _child(w, "created_at"))
        if at is None:
            raise _Refusal(_child(w, "created_at"), "every message needs its created_at")
        mid = m.get("id")
        if mid is None:
            mid = derive_id(f"convstore:{sid}:{j}", at, j)
        elif not isinstance(mid, str) or not is_record_id(mid):
            raise _Refusal(_child(w, "id"), f"{mid!r} is not a message id (26 hex digits) or null")
        if "role" not in m or "content" not in m:
            raise _Refusal(w, "a message needs 'role' and 'content'")
        edited = _time(m.get("edited_at"), _child(w, "edited_at"))
        meta = m.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise _Refusal(_child(w, "metadata"), f"expected an object, found {_kind(meta)}")
        session.messages.append(
            _message(sid, mid, m["role"], m["content"], meta or {}, at, w, edited)
        )
    state = s.get("state")
    if state is not None:
        swhere = _child(where, "state")
        state = _obj(state, swhere)
        if set(state) - {"id", "created_at", "value"} or "value" not in state:
            raise _Refusal(swhere, 'expected {"id": ..., "created_at": ..., "value": ...}')
        at = _time(state.get("created_at"), _child(swhere, "created_at"))
        if at is None:
            raise _Refusal(_child(swhere, "created_at"), "a state needs its created_at")
        state_id = state.get("id")
        if state_id is None:
            state_id = derive_id(f"convstore-state:{sid}", at)
        elif not isinstance(state_id, str) or not is_record_id(state_id):
            raise _Refusal(_child(swhere, "id"), f"{state_id!r} is not a record id or null")
        try:
            check_json(state["value"], "state")
            encode_record({"value": state["value"]})
        except InvalidInput as e:
            raise _Refusal(_child(swhere, "value"), str(e)) from None
        session.state = PlannedState(state_id, format_us(at), state["value"])
    return session


_READERS: dict[str, Callable[[Any, str], list[PlannedSession]]] = {
    "convstore": _convstore,
    "chatgpt": _chatgpt,
    "claude": _claude,
    "openai": _openai,
}


# -- writing -----------------------------------------------------------------------------------


@dataclass
class ImportPlan:
    """Everything an import will write, read and checked, and where each session came from."""

    files: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)
    sessions: list[PlannedSession] = field(default_factory=list)
    owner: dict[str, str] = field(default_factory=dict)  # session id -> file


def plan_files(
    paths: Iterable[str | Path],
    *,
    format: str = "auto",
    user_id: str | None = None,
    org_id: str | None = None,
    max_bytes: int = MAX_IMPORT_BYTES,
    max_ratio: float = MAX_IMPORT_RATIO,
) -> ImportPlan:
    """Read and check every file (nothing is written): the first phase of an import.

    ``max_bytes`` and ``max_ratio`` are the import limits of :func:`read_plan`, per file.
    """
    plan = ImportPlan()
    folded: dict[str, str] = {}
    for path in paths:
        fmt, sessions = read_plan(
            path, format, user_id=user_id, org_id=org_id, max_bytes=max_bytes, max_ratio=max_ratio
        )
        name = str(path)
        plan.files.append(name)
        plan.formats[name] = fmt
        for s in sessions:
            if s.id in plan.owner:
                raise ImportFormatError(
                    f"{name}: {s.where}: session {s.id!r} is also in {plan.owner[s.id]}; "
                    "import the files one at a time; nothing was imported"
                )
            plan.owner[s.id] = name
            other = folded.setdefault(fold_case(s.id), s.id)
            if other != s.id:
                raise ImportFormatError(
                    f"{name}: {s.where}: session id {s.id!r} differs only by case from "
                    f"{other!r} in {plan.owner[other]}; on macOS and Windows both would be one "
                    "folder; nothing was imported"
                )
        plan.sessions.extend(sessions)
    return plan


def write_plan(store: Store, plan: ImportPlan, progress: Progress | None = None) -> ImportReport:
    """Write what ``plan`` holds and the store lacks: the second phase of an import.

    Branch parents are checked against the store first, so a refusal still writes nothing.
    Sessions are written parents first, one session at a time (its record, then its messages
    in as few frames as possible). Should the process die half way, importing again completes
    the work: whatever is present is recognised by its id and skipped.
    """
    check_parents(plan, store)
    for s in plan.sessions:
        twin = store._case_twin(s.id)
        if twin is not None:
            raise CaseCollision(
                f"{plan.owner[s.id]}: {s.where}: session id {s.id!r} differs only by case from "
                f"session {twin!r} in {store.path}; on macOS and Windows both would be one "
                "folder; nothing was imported"
            )
    report = ImportReport(files=list(plan.files), formats=dict(plan.formats))
    total = len(plan.sessions)
    if progress is not None:
        progress(0, total)
    for done, s in enumerate(_parents_first(plan.sessions), 1):
        _write_session(store, s, report)
        if progress is not None:
            progress(done, total)
    return report


def import_files(
    store: Store,
    paths: Iterable[str | Path],
    *,
    format: str = "auto",
    user_id: str | None = None,
    org_id: str | None = None,
    progress: Progress | None = None,
    max_bytes: int = MAX_IMPORT_BYTES,
    max_ratio: float = MAX_IMPORT_RATIO,
) -> ImportReport:
    """Import every file into ``store``; all files are read and checked before any write."""
    plan = plan_files(
        paths,
        format=format,
        user_id=user_id,
        org_id=org_id,
        max_bytes=max_bytes,
        max_ratio=max_ratio,
    )
    return write_plan(store, plan, progress)


def check_parents(plan: ImportPlan, store: Store | None) -> None:
    """A branch must point at a message that exists, in the files or in the store (if any)."""
    planned, owner = plan.sessions, plan.owner
    by_id = {s.id: s for s in planned}
    for s in planned:
        if s.parent is None:
            continue
        psid, pmid = s.parent["session"], s.parent["message"]
        where = _child(s.where, "parent")
        file = owner[s.id]
        if psid == s.id:
            raise _refuse(file, where, "a session cannot be its own parent")
        chain = _ancestors(psid, by_id)
        if s.id in chain:
            raise _refuse(file, where, f"parent {psid!r} leads back to this session")
        found = _message_reachable(store, psid, pmid, by_id)
        if found is None:
            raise _refuse(
                file,
                where,
                f"parent session {psid!r} is neither in the file nor in the store; "
                "export it together with its branches",
            )
        if not found:
            raise _refuse(file, where, f"message {pmid!r} is not in parent session {psid!r}")


def _ancestors(sid: str, by_id: Mapping[str, PlannedSession]) -> set[str]:
    out: set[str] = set()
    cur: str | None = sid
    while cur is not None and cur in by_id and cur not in out:
        out.add(cur)
        p = by_id[cur].parent
        cur = None if p is None else p["session"]
    return out


def _message_reachable(
    store: Store | None, sid: str, mid: str, by_id: Mapping[str, PlannedSession], depth: int = 0
) -> bool | None:
    """Whether ``mid`` is in session ``sid`` (or what it inherits); None if no such session."""
    if depth > 1000:
        return False
    s = by_id.get(sid)
    if s is not None:
        if any(m.id == mid for m in s.messages):
            return True
        if s.parent is None:
            return False
        up = _message_reachable(store, s.parent["session"], mid, by_id, depth + 1)
        return bool(up)
    if store is not None and sid in store:
        return any(m.id == mid for m in store.session(sid).messages())
    return None


def _parents_first(planned: list[PlannedSession]) -> list[PlannedSession]:
    by_id = {s.id: s for s in planned}
    out: list[PlannedSession] = []
    done: set[str] = set()
    for s in planned:
        stack = []
        cur: PlannedSession | None = s
        while cur is not None and cur.id not in done:
            stack.append(cur)
            done.add(cur.id)
            cur = None if cur.parent is None else by_id.get(cur.parent["session"])
        out.extend(reversed(stack))
    return out


def _write_session(store: Store, s: PlannedSession, report: ImportReport) -> None:
    with store._reading(s.id) as view:
        exists, dropped = view.exists, view.dropped is not None
    if exists and dropped:
        # Deleted here on purpose: an import does not bring it back.
        report.sessions_skipped += 1
        report.messages_skipped += len(s.messages)
        return
    if not exists:
        try:
            store.create_session(
                s.id,
                title=s.title,
                user_id=s.user_id,
                org_id=s.org_id,
                agent_id=s.agent_id,
                metadata=s.metadata,
                created_at=s.created_at,
                _parent=s.parent,
            )
            report.sessions_added += 1
            report.added.append(s.id)
        except CaseCollision:
            raise
        except SessionExists:
            # Another process imported it at the same moment: its messages carry the same
            # ids, so whatever both write is de-duplicated by readers.
            report.sessions_skipped += 1
    else:
        report.sessions_skipped += 1
    with store._reading(s.id) as view:
        known = set(view.messages) | view.deleted
    fresh = [m.record for m in s.messages if m.id not in known]
    report.messages_skipped += len(s.messages) - len(fresh)
    batch: list[JSONDict] = []
    size = 0
    for record in fresh:
        n = len(encode_record(record))
        if batch and size + n > _FRAME_BYTES:
            store._write(s.id, batch)
            batch, size = [], 0
        batch.append(record)
        size += n
    if batch:
        store._write(s.id, batch)
    report.messages_added += len(fresh)
    if s.state is not None and s.state.id not in view.states:
        session = store.session(s.id)
        blobs, ref = session._blob_records(s.state.value, "state")
        for b in blobs:
            b["created_at"] = s.state.created_at
        record = {
            "id": s.state.id,
            "kind": "state",
            "session": s.id,
            "created_at": s.state.created_at,
            **ref,
        }
        store._write(s.id, [*blobs, record])
        report.states_added += 1
