"""A session (conversation, thread): its messages, its agent state and its checkpoints."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .dates import When, parse_when
from .errors import CheckpointNotFound, InvalidInput, MessageNotFound
from .ids import check_us, format_us, from_us, is_record_id, parse_us, to_us
from .records import (
    Content,
    Draft,
    JSONDict,
    Message,
    blob_hash,
    check_content,
    check_json,
    check_metadata,
    message_draft,
    new_message,
)

if TYPE_CHECKING:
    from .store import Store
    from .view import Checkpoint, Key, SessionView

_UNSET: Any = object()


@dataclass(frozen=True)
class StateEntry:
    """One saved agent state."""

    id: str
    created_at: datetime
    state: Any


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint with its state resolved."""

    checkpoint_id: str
    namespace: str
    parent_id: str | None
    metadata: JSONDict
    created_at: datetime
    state: Any


@dataclass(frozen=True)
class PendingWrite:
    """Writes a task made after a checkpoint (LangGraph's pending writes)."""

    task_id: str
    task_path: str
    writes: list[tuple[str, Any]]


class Session:
    """A handle on one session. Cheap to make; every read sees the files as they are now."""

    def __init__(self, store: Store, session_id: str) -> None:
        self.store = store
        self.id = session_id
        self._json = orjson.dumps(session_id)  # the id as it appears in each record's head

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Session) and other.store is self.store and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- metadata ------------------------------------------------------------------------------

    def _reading(self) -> AbstractContextManager[SessionView]:
        """The refreshed view, held under its lock. Every look at the view goes through it:
        another thread may be appending, or rebuilding the view after a compaction, and a
        look taken outside the lock could find the session or a message missing."""
        return self.store._reading(self.id)

    def _field(self, name: str) -> Any:
        with self._reading() as view:
            return view.field(name)

    @property
    def path(self) -> Path:
        return self.store._session_folder(self.id)

    @property
    def title(self) -> str | None:
        return self._field("title")  # type: ignore[no-any-return]

    @property
    def user_id(self) -> str | None:
        return self._field("user_id")  # type: ignore[no-any-return]

    @property
    def org_id(self) -> str | None:
        return self._field("org_id")  # type: ignore[no-any-return]

    @property
    def agent_id(self) -> str | None:
        return self._field("agent_id")  # type: ignore[no-any-return]

    @property
    def metadata(self) -> JSONDict:
        return dict(self._field("metadata") or {})

    @property
    def parent(self) -> tuple[str, str] | None:
        """(parent session id, message id) for a branch, else None."""
        p = self._field("parent")
        return None if not p else (p["session"], p["message"])

    @property
    def created_at(self) -> datetime:
        with self._reading() as view:
            first = view.first_key
        return from_us(first[0] if first else 0)

    @property
    def updated_at(self) -> datetime:
        with self._reading() as view:
            return from_us(view.last_us)

    def info(self) -> JSONDict:
        """Everything about the session but its messages, as JSON-ready values."""
        with self._reading() as view:
            return self._info(view)

    def _info(self, view: SessionView) -> JSONDict:
        parent = view.field("parent")
        return {
            "id": self.id,
            "title": view.field("title"),
            "user_id": view.field("user_id"),
            "org_id": view.field("org_id"),
            "agent_id": view.field("agent_id"),
            "metadata": view.field("metadata") or {},
            "parent": parent or None,
            "created_at": format_us(view.first_key[0] if view.first_key else 0),
            "updated_at": format_us(view.last_us),
            "messages": len(view.shown()[1]) if not parent else len(self),
        }

    def update(
        self, *, title: str | None = _UNSET, metadata: Mapping[str, Any] | None = _UNSET
    ) -> None:
        """Change the title and/or replace the metadata (last writer wins per field)."""
        record: JSONDict = {}
        if title is not _UNSET:
            record["title"] = _check_label(title, "title", 1000)
        if metadata is not _UNSET:
            record["metadata"] = check_metadata(metadata)
        if not record:
            raise InvalidInput("update() needs title= or metadata=")
        self.store._write(self.id, [self.store._record("session", self.id, **record)])

    # -- messages ------------------------------------------------------------------------------

    def append(
        self,
        role: str,
        content: Content,
        *,
        metadata: Mapping[str, Any] | None = None,
        created_at: datetime | str | None = None,
    ) -> Message:
        """Append one message; with the default durability it is on disk when this returns."""
        d = message_draft(self._json, role, content, metadata, *_when(created_at))
        (w,) = self.store._write(self.id, [d])
        return w.message or new_message(w.id, self.id, w.fields, w.at_us)

    def extend(self, messages: Iterable[Mapping[str, Any] | Message]) -> list[Message]:
        """Append many messages as one frame: one lock, one write, one fsync. All or nothing."""
        drafts: list[Draft] = []
        for i, m in enumerate(messages):
            if type(m) is dict or isinstance(m, Mapping):  # the exact check first: it is cheap
                item: Mapping[str, Any] = m
            elif isinstance(m, Message):
                item = {
                    "role": m.role,
                    "content": m.content,
                    "metadata": m.metadata,
                    "created_at": m.created_at,
                }
            else:
                raise InvalidInput(
                    f"messages[{i}] must be a dict or a Message, not {type(m).__name__}"
                )
            if not item.keys() <= _MESSAGE_KEYS:
                unknown = sorted(set(item) - _MESSAGE_KEYS)
                raise InvalidInput(f"messages[{i}] has unknown keys {unknown}")
            if "role" not in item or "content" not in item:
                raise InvalidInput(f"messages[{i}] needs 'role' and 'content'")
            drafts.append(
                message_draft(
                    self._json,
                    item["role"],
                    item["content"],
                    item.get("metadata"),
                    *_when(item.get("created_at")),
                )
            )
        if not drafts:
            return []
        return [
            w.message or new_message(w.id, self.id, w.fields, w.at_us)
            for w in self.store._write(self.id, drafts)
        ]

    def _ordered(self) -> list[Message]:
        return self.store._ordered(self.id)

    def messages(
        self,
        limit: int | None = None,
        before: str | When | None = None,
        after: str | When | None = None,
    ) -> list[Message]:
        """Messages in chronological order.

        ``before``/``after`` take a message id (exclusive cursor) or a date (see ``dates.py``).
        With ``before`` and a ``limit``, the page is the ``limit`` messages just before it, so
        ``messages(limit=20, before=oldest_shown.id)`` scrolls back.
        """
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative integer, not {limit!r}")
        after_at = None if after is None else self._bound(after, cursor_after=True)
        before_at = None if before is None else self._bound(before, cursor_after=False)
        from_end = before is not None and after is None

        def page(keys: list[Key], msgs: list[Message]) -> list[Message]:
            lo = 0 if after_at is None else after_at(keys)
            hi = len(msgs) if before_at is None else before_at(keys)
            if limit is not None:
                if limit == 0:
                    return []
                if from_end:
                    lo = max(lo, hi - limit)
                else:
                    hi = min(hi, lo + limit)
            return msgs[lo:hi] if lo < hi else []

        return self.store._select(self.id, page)

    def _bound(self, bound: str | When, *, cursor_after: bool) -> Callable[[list[Key]], int]:
        """Where a cursor (a message id) or a date falls in the ordered keys."""
        key: Key | None = None
        if isinstance(bound, str):
            msg = self._find(bound)
            if msg is not None:
                key = (to_us(msg.created_at), msg.id)
            else:
                with self._reading() as view:
                    key = view.deleted_keys.get(bound)
        if key is not None:
            at: Key = key
            if cursor_after:
                return lambda keys: bisect.bisect_right(keys, at)
            return lambda keys: bisect.bisect_left(keys, at)
        if isinstance(bound, str) and is_record_id(bound):
            raise MessageNotFound(f"no message {bound!r} in session {self.id!r} to page from")
        us = parse_when(bound)
        assert us is not None
        return lambda keys: bisect.bisect_left(keys, (us, ""))

    def _find(self, message_id: str) -> Message | None:
        with self._reading() as view:
            msg = view.shown_message(message_id)
            branch = view.field("parent") is not None
        if msg is None and branch:
            msg = next((m for m in self._ordered() if m.id == message_id), None)
        return msg

    def recent(self, n: int = 20) -> list[Message]:
        """The last ``n`` messages, oldest first, never starting on a tool result.

        Chat APIs refuse a tool result whose tool call is not before it, so when the last
        ``n`` would start inside a tool exchange the window reaches back to the assistant
        message that made the calls (it then holds that message and every result of it, a few
        more than ``n``). Tool results at the start of the window that answer no such message
        (their call was deleted, or never stored) are left out instead. Only the start is
        adjusted; the messages are otherwise the session's as they are. A system prompt is
        included only when it is among them: ``messages(limit=1)`` reads a session's first
        message.
        """
        if not isinstance(n, int) or n < 0:
            raise InvalidInput(f"n must be a non-negative integer, not {n!r}")
        if n == 0:
            return []
        return self.store._select(self.id, lambda keys, msgs: msgs[_window_start(msgs, n) :])

    def _last(self, n: int) -> list[Message]:
        """Exactly the last ``n`` messages (a protocol's "latest n items")."""
        return self.store._select(self.id, lambda keys, msgs: msgs[-n:] if n else [])

    def get(self, message_id: str) -> Message:
        msg = self._find(message_id)
        if msg is None:
            raise MessageNotFound(f"no message {message_id!r} in session {self.id!r}")
        return msg

    def edit(self, message_id: str, content: Content) -> Message:
        """Replace a message's content. The old content is purged by the next compaction."""
        content = check_content(content)
        self._own_message(message_id)
        record = self.store._record("edit", self.id, target=message_id, content=content)
        self.store._write(self.id, [record])
        return self.get(message_id)

    def delete_message(self, message_id: str) -> None:
        """Delete a message (a tombstone now; the bytes go at the next compaction)."""
        self.delete_messages([message_id])

    def delete_messages(self, message_ids: Iterable[str]) -> int:
        """Delete several messages in one frame (one lock, one fsync); returns how many."""
        if isinstance(message_ids, str):
            raise InvalidInput(f"message_ids must be a list of ids; pass [{message_ids!r}]")
        ids = list(dict.fromkeys(message_ids))
        for mid in ids:
            self._own_message(mid)
        if ids:
            records = [self.store._record("delete", self.id, target=mid) for mid in ids]
            self.store._write(self.id, records)
        return len(ids)

    def clear(self) -> int:
        """Delete every message of this session (its own, not a branch's inherited ones)."""
        with self._reading() as view:
            ids = [m.id for m in view.shown()[1]]
        return self.delete_messages(ids)

    def _own_message(self, message_id: str) -> None:
        with self._reading() as view:
            own = view.shown_message(message_id) is not None
        if not own:
            if any(m.id == message_id for m in self._ordered()):
                raise InvalidInput(
                    f"message {message_id!r} belongs to the parent of branch {self.id!r}; "
                    "edit it there, or append a corrected message to the branch"
                )
            raise MessageNotFound(f"no message {message_id!r} in session {self.id!r}")

    def __len__(self) -> int:
        return self.store._select(self.id, lambda keys, msgs: len(msgs))

    def __iter__(self) -> Any:
        return iter(self._ordered())

    def branch(
        self, at: str | None = None, *, branch_id: str | None = None, title: str | None = None
    ) -> Session:
        """A branch sharing this session's history up to message ``at``; see Store.branch."""
        return self.store.branch(self.id, at, branch_id=branch_id, title=title)

    # -- agent state ---------------------------------------------------------------------------

    def save_state(self, state: Any) -> str:
        """Save the agent's state and return its record id. Unchanged keys are not rewritten."""
        records, ref = self._blob_records(state, "state")
        record = self.store._record("state", self.id, **ref)
        self.store._write(self.id, [*records, record])
        return str(record["id"])

    def load_state(self, default: Any = None) -> Any:
        """The latest saved state, or ``default``."""
        with self._reading() as view:
            if not view.states:
                return default
            return view.resolve(view.states[max(view.states)][1])

    def state_history(self, limit: int | None = None) -> list[StateEntry]:
        """Saved states, newest first."""
        with self._reading() as view:
            newest_first = sorted(view.states, reverse=True)[:limit]
            return [
                StateEntry(rid, from_us(view.states[rid][0][0]), view.resolve(view.states[rid][1]))
                for rid in newest_first
            ]

    def _blob_records(self, value: Any, what: str) -> tuple[list[JSONDict], JSONDict]:
        """Blob records for the parts of ``value`` this session does not hold yet, and the ref.

        A dict is split by top-level key, so a step that changes one channel of a large state
        writes that channel only: storage grows with what changed, not with the whole state.
        """
        check_json(value, what)
        parts: dict[str, Any] = {}

        def put(v: Any) -> str:
            h, _ = blob_hash(v)
            parts.setdefault(h, v)
            return h

        if isinstance(value, dict) and value:
            ref: JSONDict = {"parts": {str(k): put(v) for k, v in value.items()}}
        else:
            ref = {"value": put(value)}
        # Only blobs in this clone's own files may be referred to without writing them again:
        # another clone's files are purged by their owner alone, who may not know of this
        # state (a session it deleted, while this clone, not knowing, kept saving state).
        with self._reading() as view:
            fresh = [(h, v) for h, v in parts.items() if h not in view.own_blobs]
        records = [self.store._record("blob", self.id, hash=h, data=v) for h, v in fresh]
        return records, ref

    # -- checkpoints ---------------------------------------------------------------------------

    def put_checkpoint(
        self,
        checkpoint_id: str,
        state: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
        parent_id: str | None = None,
        namespace: str = "",
    ) -> CheckpointEntry:
        """Store a checkpoint. Its state is split into content-addressed blobs per top-level key."""
        _check_label(checkpoint_id, "checkpoint_id", 256, required=True)
        _check_label(namespace, "namespace", 256)
        if parent_id is not None:
            _check_label(parent_id, "parent_id", 256)
        meta = check_metadata(metadata)
        records, ref = self._blob_records(state, "checkpoint state")
        record = self.store._record(
            "checkpoint",
            self.id,
            checkpoint_id=checkpoint_id,
            namespace=namespace,
            parent_id=parent_id,
            metadata=meta,
            **ref,
        )
        self.store._write(self.id, [*records, record])
        return CheckpointEntry(
            checkpoint_id,
            namespace,
            parent_id,
            meta,
            from_us(parse_us(record["created_at"])),
            state,
        )

    @staticmethod
    def _entry(view: SessionView, cp: Checkpoint, with_state: bool = True) -> CheckpointEntry:
        return CheckpointEntry(
            cp.checkpoint_id,
            cp.namespace,
            cp.parent_id,
            dict(cp.metadata),
            cp.created_at,
            view.resolve(cp.record) if with_state else None,
        )

    def get_checkpoint(
        self, checkpoint_id: str | None = None, *, namespace: str = ""
    ) -> CheckpointEntry:
        """A checkpoint by id, or the newest one of ``namespace`` when no id is given."""
        with self._reading() as view:
            for cp in view.live_checkpoints(namespace):
                if checkpoint_id is None or cp.checkpoint_id == checkpoint_id:
                    return self._entry(view, cp)
        what = f"checkpoint {checkpoint_id!r}" if checkpoint_id else "any checkpoint"
        raise CheckpointNotFound(f"no {what} in namespace {namespace!r} of session {self.id!r}")

    def list_checkpoints(
        self,
        *,
        namespace: str | None = None,
        before: str | None = None,
        limit: int | None = None,
        with_state: bool = True,
    ) -> list[CheckpointEntry]:
        """Checkpoints newest first; ``before`` is a checkpoint id (exclusive)."""
        with self._reading() as view:
            live = view.live_checkpoints(namespace)
            if before is not None:
                cut = next((cp.rid for cp in live if cp.checkpoint_id == before), None)
                live = [cp for cp in live if cut is None or cp.rid < cut]
            live = live[:limit] if limit is not None else live
            return [self._entry(view, cp, with_state) for cp in live]

    def delete_checkpoints(
        self, checkpoint_ids: Iterable[str] | None = None, *, namespace: str = ""
    ) -> None:
        """Delete the given checkpoints of ``namespace``, or all of them (None)."""
        if isinstance(checkpoint_ids, str):
            raise InvalidInput(
                f"checkpoint_ids must be a list of ids, not the string {checkpoint_ids!r}; "
                f"pass [{checkpoint_ids!r}]"
            )
        ids = None if checkpoint_ids is None else [str(c) for c in checkpoint_ids]
        record = self.store._record("cp_delete", self.id, namespace=namespace, checkpoint_ids=ids)
        self.store._write(self.id, [record])

    def put_writes(
        self,
        checkpoint_id: str,
        task_id: str,
        writes: Iterable[tuple[str, Any]],
        *,
        task_path: str = "",
        namespace: str = "",
    ) -> None:
        """Record the writes a task made after ``checkpoint_id`` (LangGraph pending writes)."""
        pairs = [(str(ch), v) for ch, v in writes]
        blobs: list[JSONDict] = []
        refs = []
        for channel, value in pairs:
            records, ref = self._blob_records(value, "write")
            blobs.extend(r for r in records if r["hash"] not in {b["hash"] for b in blobs})
            refs.append([channel, ref.get("value", ref)])
        record = self.store._record(
            "cp_writes",
            self.id,
            checkpoint_id=checkpoint_id,
            namespace=namespace,
            task_id=task_id,
            task_path=task_path,
            writes=refs,
        )
        self.store._write(self.id, [*blobs, record])

    def get_writes(self, checkpoint_id: str, *, namespace: str = "") -> list[PendingWrite]:
        out = []
        with self._reading() as view:
            per_task = view.writes.get((namespace, checkpoint_id), {})
            deleted_at = max(
                view.cp_delete_all.get(namespace, ""),
                view.cp_delete_one.get((namespace, checkpoint_id), ""),
            )
            for _, record in sorted(per_task.values(), key=lambda kr: kr[0]):
                if record["id"] < deleted_at:
                    continue  # writes of a checkpoint deleted since: not resurrected
                writes = [
                    (ch, view.resolve({"value": ref} if isinstance(ref, str) else ref))
                    for ch, ref in record["writes"]
                ]
                out.append(PendingWrite(record["task_id"], record.get("task_path", ""), writes))
        return out


def _check_label(value: Any, what: str, limit: int, *, required: bool = False) -> Any:
    if value is None and not required:
        return None
    if isinstance(value, str) and len(value) > limit:
        # Not the value itself: it can be megabytes long, and the message is one line.
        raise InvalidInput(f"{what} is {len(value)} characters long; make it at most {limit}")
    if not isinstance(value, str) or (required and not value):
        raise InvalidInput(
            f"{what} must be a string of at most {limit} characters, not {value!r:.60}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} holds a lone surrogate; it is not valid Unicode") from None
    return value


_MESSAGE_KEYS = frozenset(("role", "content", "metadata", "created_at"))


def _when(created_at: object) -> tuple[int | None, datetime | None]:
    """A caller's ``created_at`` (None, an aware or UTC datetime, or an ISO string) in
    microseconds, and the datetime itself when it can be shown as it is (aware, in UTC)."""
    if created_at is None:
        return None, None
    if isinstance(created_at, datetime):
        us = check_us(to_us(created_at))
        exact = type(created_at) is datetime and created_at.tzinfo is timezone.utc
        return us, created_at if exact else None
    if isinstance(created_at, str):
        return parse_us(created_at), None
    raise InvalidInput(f"created_at must be a datetime or an ISO string, not {created_at!r}")


def _call_ids(m: Message, kind: str, key: str) -> set[str]:
    if isinstance(m.content, str):
        return set()
    return {str(part.get(key)) for part in m.content if part.get("type") == kind}


def _is_tool_result(m: Message) -> bool:
    return m.role == "tool" or bool(_call_ids(m, "tool_result", "tool_call_id"))


def _window_start(msgs: list[Message], n: int) -> int:
    """Where ``recent(n)`` starts: ``len - n``, moved off a tool result cut from its call.

    Only the run of tool results just before the start is read back, so the cost stays that of
    the window (a million-message session is not scanned).
    """
    start = max(0, len(msgs) - n)
    if start == len(msgs) or not _is_tool_result(msgs[start]):
        return start
    caller = start
    while caller > 0 and _is_tool_result(msgs[caller]):
        caller -= 1
    answered = _call_ids(msgs[start], "tool_result", "tool_call_id")
    # Results imported as plain text name no call: they answer the assistant before them.
    calls = _call_ids(msgs[caller], "tool_call", "id")
    if msgs[caller].role == "assistant" and (not answered or answered & calls):
        return caller
    while start < len(msgs) and _is_tool_result(msgs[start]):
        start += 1
    return start


def merge_ordered(parts: list[list[Message]]) -> list[Message]:
    """Merge already-sorted message lists by (created_at, id)."""
    return list(heapq.merge(*parts, key=lambda m: (m.created_at, m.id)))
