"""A LangGraph checkpointer that keeps every thread in a convstore session.

``ConvstoreSaver(store)`` implements ``BaseCheckpointSaver``, sync and async, including the
extended ``copy_thread``, ``prune`` and ``delete_for_runs``. It passes LangGraph's official
conformance suite (``langgraph-checkpoint-conformance``)::

    from convstore import Store
    from convstore.integrations.langgraph import ConvstoreSaver

    graph = builder.compile(checkpointer=ConvstoreSaver(Store("chats")))
    graph.invoke({"messages": [("user", "hi")]}, {"configurable": {"thread_id": "user/42"}})

Mapping
-------
- ``thread_id`` -> a session, made on the first ``put`` (see ``convstore.integrations`` for how
  ids that are not valid session ids are escaped); ``checkpoint_ns`` -> the ``namespace`` of
  ``Session.put_checkpoint``; pending writes -> ``Session.put_writes``/``get_writes``;
  checkpoint metadata -> the checkpoint record's JSON metadata, so SQL can filter on it.
- Values go through the saver's ``serde`` (``dumps_typed`` -> ``(type, bytes)``) and are kept
  as ``[type, base64]`` pairs.

Why storage grows with what changed, not with the history
---------------------------------------------------------
``put_checkpoint`` stores a state dict as one content-addressed blob per top-level key, and a
blob the session already holds is never written again. The state of one checkpoint is:

=================== ==================================================================
key                 value
=================== ==================================================================
``checkpoint``      the checkpoint without its channel values (ids, versions): serde
``c:<channel>``     only for channels in ``new_versions``: ``{"v": version, "t", "b"}``,
                    or for a list ``{"v", "list": n, "keep": k, "base": [cp_id, version]}``
``i<j>:<channel>``  item ``j`` of the ``n`` list items this checkpoint adds
=================== ==================================================================

A channel that did not change is not in the state at all: a reader finds the checkpoint that
holds ``(channel, version)`` (itself, else the nearest ancestor, else any). A list channel such
as ``messages`` grows by appending, so a new version stores only the items that differ: it
keeps the first ``keep`` items of the ``base`` version and appends its own. Each item is its own
blob, so the message a node wrote as a pending write and the same message in the next
checkpoint are stored once. A chat step therefore writes the new message and a few hundred
bytes of bookkeeping, where ``SqliteSaver`` rewrites the whole message list
(``benchmarks/langgraph_bytes.py`` measures both).

Every item of a list is still serialised on each ``put`` to find what changed, so a node that
mutates a message in place is stored correctly; the cost is CPU (about 2 us per message), not
bytes.

Deleting checkpoints (``prune``, ``delete_for_runs``) first rewrites any surviving checkpoint
whose values live in, or chain through, a checkpoint about to go: it gets full copies of those
values. ``prune("keep_latest")`` also keeps the ancestors that LangGraph's ``DeltaChannel``
needs (up to the last snapshot of each channel named in ``counters_since_delta_snapshot``).

Choices
-------
- ``delete_thread`` deletes the checkpoints and writes of every namespace but keeps the session
  (with any messages other code appended to it), so the same ``thread_id`` can be used again;
  compaction removes the bytes.
- Graph messages are not copied into the session as convstore messages: the checkpoints are
  self-contained, and retention or a user's edit of a message can never break a thread. Use
  ``ConvstoreChatMessageHistory`` or ``Session.append`` for a searchable transcript.
- ``list(None, ...)`` and ``delete_for_runs`` look at every session of the store.
- The async methods run the sync ones in a worker thread (``asyncio.to_thread``): every store
  operation touches files, and most of them fsync.
"""

from __future__ import annotations

import asyncio
import base64
import random
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from types import TracebackType
from typing import Any, cast

import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from ..errors import CorruptData, InvalidContent, InvalidInput, SessionNotFound
from ..session import CheckpointEntry, Session
from ..store import Store
from . import external_id_for, open_session

__all__ = ["ConvstoreSaver"]

# How many (session, namespace) pairs keep the list items of their latest checkpoint in memory,
# so that the next step finds what it appends to without reading the thread back.
_CACHE_NAMESPACES = 256
# Threads of one process write a session one at a time; sessions share this many locks.
_WRITE_STRIPES = 64

Encoded = list[str]  # [serde type, base64 of the bytes]


@dataclass
class _Stored:
    """One checkpoint as stored: its parts are JSON, nothing is deserialised yet."""

    id: str
    parent_id: str | None
    metadata: dict[str, Any]
    parts: dict[str, Any]
    _skeleton: dict[str, Any] | None = field(default=None, repr=False)


@dataclass
class _ListTail:
    """The items of one list channel at one version, and the checkpoint that holds it."""

    holder: str
    version: Any
    items: list[Encoded]


class _Namespace:
    """All checkpoints of one namespace of one thread, with the index that resolves values."""

    def __init__(self, session_id: str, namespace: str, entries: Iterable[CheckpointEntry]):
        self.session_id = session_id
        self.namespace = namespace
        self.by_id: dict[str, _Stored] = {}
        for e in entries:
            parts = e.state if isinstance(e.state, dict) else {}
            self.by_id[e.checkpoint_id] = _Stored(
                e.checkpoint_id, e.parent_id, dict(e.metadata), dict(parts)
            )
        self.holders: dict[tuple[str, str], list[str]] = {}
        for s in self.by_id.values():
            self._index(s)

    def _index(self, s: _Stored) -> None:
        for key, part in s.parts.items():
            if key.startswith("c:") and isinstance(part, dict) and "v" in part:
                found = self.holders.setdefault((key[2:], _vkey(part["v"])), [])
                if s.id not in found:
                    found.append(s.id)

    def replace(self, s: _Stored) -> None:
        self.by_id[s.id] = s
        self._index(s)

    def latest(self) -> _Stored | None:
        return self.by_id[max(self.by_id)] if self.by_id else None

    def ancestors(self, s: _Stored) -> Iterator[_Stored]:
        """The parent, grandparent... of ``s`` that are still stored (a loop ends the walk)."""
        seen = {s.id}
        cur = s.parent_id
        while cur is not None and cur in self.by_id and cur not in seen:
            seen.add(cur)
            node = self.by_id[cur]
            yield node
            cur = node.parent_id

    def holder(self, s: _Stored, channel: str, version: Any) -> str | None:
        """The id of the checkpoint that stores ``channel`` at ``version`` as seen from ``s``."""
        part = s.parts.get("c:" + channel)
        if isinstance(part, dict) and _vkey(part.get("v")) == _vkey(version):
            return s.id
        found = self.holders.get((channel, _vkey(version)))
        if not found:
            return None
        live = [h for h in found if h in self.by_id]
        if len(live) <= 1:
            return live[0] if live else None
        # Forks may reuse a version number: prefer the one on this checkpoint's own path.
        for node in self.ancestors(s):
            if node.id in live:
                return node.id
        return max(live)

    def _base_holder(self, channel: str, base: Any) -> str:
        if isinstance(base, list) and len(base) == 2:
            cp_id, version = base
            node = self.by_id.get(cp_id)
            if node is not None:
                part = node.parts.get("c:" + channel)
                if isinstance(part, dict) and _vkey(part.get("v")) == _vkey(version):
                    return str(cp_id)
            found = [h for h in self.holders.get((channel, _vkey(version)), []) if h in self.by_id]
            if found:
                return max(found)
        raise CorruptData(
            f"session {self.session_id!r}, namespace {self.namespace!r}: the list channel "
            f"{channel!r} is stored as a change to {base!r}, which no checkpoint holds; "
            "run check() and restore the segment that held it"
        )

    def chain(self, holder: str, channel: str) -> list[str]:
        """The checkpoints whose parts make up ``channel`` at ``holder``, newest first."""
        out = [holder]
        part = self.by_id[holder].parts["c:" + channel]
        while isinstance(part, dict) and part.get("base") is not None:
            nxt = self._base_holder(channel, part["base"])
            if nxt in out:
                raise CorruptData(
                    f"session {self.session_id!r}: the list channel {channel!r} refers to "
                    f"itself through checkpoint {nxt!r}"
                )
            out.append(nxt)
            part = self.by_id[nxt].parts["c:" + channel]
        return out

    def encoded(self, holder: str, channel: str) -> tuple[bool, Any]:
        """``(is_list, value)``: a list of encoded items, or one encoded value."""
        segments: list[tuple[int, list[Encoded]]] = []
        for cp_id in self.chain(holder, channel):
            parts = self.by_id[cp_id].parts
            part = parts["c:" + channel]
            if "list" not in part:
                if segments:
                    raise CorruptData(
                        f"session {self.session_id!r}: list channel {channel!r} is based on "
                        f"a value that is not a list (checkpoint {cp_id!r})"
                    )
                return False, [part["t"], part["b"]]
            try:
                items = [parts[f"i{j}:{channel}"] for j in range(int(part["list"]))]
            except KeyError as e:
                raise CorruptData(
                    f"session {self.session_id!r}: checkpoint {cp_id!r} lacks part {e} of "
                    f"channel {channel!r}"
                ) from None
            segments.append((int(part.get("keep", 0)), items))
        out: list[Encoded] = []
        for keep, items in reversed(segments):
            del out[keep:]
            out.extend(items)
        return True, out


class ConvstoreSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpointer storing each thread as a convstore session (see module doc).

    ``store`` is a :class:`~convstore.Store` or the path of one; a store opened from a path is
    closed by :meth:`close` (or by leaving a ``with`` block).
    """

    def __init__(
        self,
        store: Store | str | PathLike[str],
        *,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._owns_store = not isinstance(store, Store)
        self.store = store if isinstance(store, Store) else Store(store)
        self._guard = threading.Lock()
        self._writing = [threading.Lock() for _ in range(_WRITE_STRIPES)]
        self._tails: OrderedDict[tuple[str, str], tuple[str, dict[str, _ListTail]]] = OrderedDict()

    def close(self) -> None:
        """Close the store if this saver opened it."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> ConvstoreSaver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> ConvstoreSaver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- sessions ------------------------------------------------------------------------------

    def _session(self, thread_id: str, *, create: bool) -> Session | None:
        return open_session(
            self.store,
            thread_id,
            create=create,
            source="langgraph",
            title=f"LangGraph thread {thread_id}"[:1000],
        )

    def _threads(self) -> Iterator[tuple[str, Session]]:
        """Every (thread id, session) of the store that holds checkpoints."""
        for sid in self.store.session_ids():
            try:
                session = self.store.session(sid)
            except (SessionNotFound, InvalidInput):
                continue
            if not session.list_checkpoints(with_state=False, limit=1):
                continue
            thread_id = external_id_for(sid, session.metadata)
            if thread_id is not None:
                yield thread_id, session

    def _namespace(self, session: Session, namespace: str) -> _Namespace:
        return _Namespace(session.id, namespace, session.list_checkpoints(namespace=namespace))

    def _writer(self, session_id: str) -> threading.Lock:
        # LangGraph saves a task's writes and the next checkpoint from background threads. One
        # at a time per thread, the checkpoint sees the blobs the writes just stored (the
        # message a node returned) and does not store them a second time.
        return self._writing[hash(session_id) % _WRITE_STRIPES]

    def _forget(self, session_id: str) -> None:
        with self._guard:
            for key in [k for k in self._tails if k[0] == session_id]:
                del self._tails[key]

    # -- encoding ------------------------------------------------------------------------------

    def _encode(self, value: Any) -> Encoded:
        kind, data = self.serde.dumps_typed(value)
        return [kind, base64.b64encode(data).decode("ascii")]

    def _encode_skeleton(self, skeleton: dict[str, Any]) -> dict[str, Any]:
        # Plain JSON when it comes back identical (the usual case: ids, timestamps, version
        # strings): readable from SQL, and it compresses far better than base64.
        try:
            if orjson.loads(orjson.dumps(skeleton)) == skeleton:
                return {"json": skeleton}
        except TypeError:
            pass
        return {"serde": self._encode(skeleton)}

    def _decode(self, encoded: Any) -> Any:
        try:
            kind, data = encoded
            return self.serde.loads_typed((kind, base64.b64decode(data)))
        except (TypeError, ValueError) as e:
            raise CorruptData(f"a stored LangGraph value does not decode: {e}") from None

    def _skeleton(self, s: _Stored) -> dict[str, Any]:
        if s._skeleton is None:
            try:
                part = s.parts["checkpoint"]
                skeleton = part["json"] if "json" in part else self._decode(part["serde"])
            except (KeyError, TypeError):
                raise CorruptData(
                    f"checkpoint {s.id!r} has no 'checkpoint' part; it was not written by "
                    "ConvstoreSaver"
                ) from None
            s._skeleton = skeleton if isinstance(skeleton, dict) else {}
        return s._skeleton

    def _values(self, ns: _Namespace, s: _Stored) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for channel, version in self._skeleton(s).get("channel_versions", {}).items():
            holder = ns.holder(s, channel, version)
            if holder is None:
                continue  # an empty channel, as in every other saver
            is_list, enc = ns.encoded(holder, channel)
            values[channel] = [self._decode(i) for i in enc] if is_list else self._decode(enc)
        return values

    def _encode_write(self, idx: int, value: Any) -> dict[str, Any]:
        # A list is stored item by item, each item its own blob: the same message in the next
        # checkpoint's list then costs nothing.
        if type(value) is list:
            out: dict[str, Any] = {"idx": idx, "list": len(value)}
            for j, item in enumerate(value):
                out[str(j)] = self._encode(item)
            return out
        return {"idx": idx, "value": self._encode(value)}

    def _decode_write(self, stored: Any) -> Any:
        if not isinstance(stored, dict) or "idx" not in stored:
            raise CorruptData(f"a stored LangGraph write is malformed: {stored!r:.80}")
        if "list" in stored:
            return [self._decode(stored[str(j)]) for j in range(int(stored["list"]))]
        return self._decode(stored["value"])

    def _writes(
        self, session: Session, namespace: str, checkpoint_id: str, channels: set[str] | None = None
    ) -> list[PendingWrite]:
        rows: list[tuple[tuple[str, str, int], PendingWrite]] = []
        for task in session.get_writes(checkpoint_id, namespace=namespace):
            for channel, stored in task.writes:
                if channels is not None and channel not in channels:
                    continue
                idx = int(stored.get("idx", 0)) if isinstance(stored, dict) else 0
                rows.append(
                    (
                        writes_sort_key(task.task_path, task.task_id, idx),
                        (task.task_id, channel, self._decode_write(stored)),
                    )
                )
        rows.sort(key=lambda r: r[0])
        return [w for _, w in rows]

    def _tuple(
        self, session: Session, thread_id: str, ns: _Namespace, s: _Stored
    ) -> CheckpointTuple:
        skeleton = dict(self._skeleton(s))
        checkpoint: Any = {**skeleton, "channel_values": self._values(ns, s)}
        parent = None if s.parent_id is None else _config(thread_id, ns.namespace, s.parent_id)
        return CheckpointTuple(
            config=_config(thread_id, ns.namespace, s.id),
            checkpoint=checkpoint,
            metadata=cast(CheckpointMetadata, dict(s.metadata)),
            parent_config=parent,
            pending_writes=self._writes(session, ns.namespace, s.id),
        )

    # -- reading -------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, namespace = _thread(config)
        session = self._session(thread_id, create=False)
        if session is None:
            return None
        ns = self._namespace(session, namespace)
        checkpoint_id = get_checkpoint_id(config)
        s = ns.by_id.get(checkpoint_id) if checkpoint_id else ns.latest()
        if s is None:
            return None
        return self._tuple(session, thread_id, ns, s)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        if config is not None:
            thread_id, _ = _thread(config)
            session = self._session(thread_id, create=False)
            threads = [] if session is None else [(thread_id, session)]
            namespace = config.get("configurable", {}).get("checkpoint_ns")
            only_id = get_checkpoint_id(config)
        else:
            threads = list(self._threads())
            namespace = None
            only_id = None
        before_id = get_checkpoint_id(before) if before else None
        wanted = _json(filter or {}, "list filter")
        found: list[tuple[str, str, str, Session]] = []
        for thread_id, session in threads:
            for e in session.list_checkpoints(namespace=namespace, with_state=False):
                if only_id is not None and e.checkpoint_id != only_id:
                    continue
                if before_id is not None and e.checkpoint_id >= before_id:
                    continue
                if any(e.metadata.get(k) != v for k, v in wanted.items()):
                    continue
                found.append((e.checkpoint_id, e.namespace, thread_id, session))
        found.sort(key=lambda f: f[0], reverse=True)
        if limit is not None:
            found = found[: max(limit, 0)]
        loaded: dict[tuple[str, str], _Namespace] = {}
        for checkpoint_id, ns_name, thread_id, session in found:
            ns = loaded.get((session.id, ns_name))
            if ns is None:
                ns = loaded[(session.id, ns_name)] = self._namespace(session, ns_name)
            s = ns.by_id.get(checkpoint_id)
            if s is not None:  # deleted since we listed: skip it
                yield self._tuple(session, thread_id, ns, s)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Walk the parent chain once, reading the thread once (the default reads it per step)."""
        if not channels:
            return {}
        collected: dict[str, list[PendingWrite]] = {c: [] for c in channels}
        seeds: dict[str, Any] = {}
        thread_id, namespace = _thread(config)
        session = self._session(thread_id, create=False)
        if session is not None:
            ns = self._namespace(session, namespace)
            checkpoint_id = get_checkpoint_id(config)
            target = ns.by_id.get(checkpoint_id) if checkpoint_id else ns.latest()
            remaining = set(channels)
            for node in ns.ancestors(target) if target is not None else ():
                if not remaining:
                    break
                for write in reversed(self._writes(session, namespace, node.id, remaining)):
                    collected[write[1]].append(write)
                versions = self._skeleton(node).get("channel_versions", {})
                for channel in list(remaining):
                    if channel not in versions:
                        continue
                    holder = ns.holder(node, channel, versions[channel])
                    if holder is None:
                        continue
                    is_list, enc = ns.encoded(holder, channel)
                    seeds[channel] = (
                        [self._decode(i) for i in enc] if is_list else self._decode(enc)
                    )
                    remaining.discard(channel)
        result: dict[str, DeltaChannelHistory] = {}
        for channel in channels:
            entry: DeltaChannelHistory = {"writes": list(reversed(collected[channel]))}
            if channel in seeds:
                entry["seed"] = seeds[channel]
            result[channel] = entry
        return result

    # -- writing -------------------------------------------------------------------------------

    def _tails_of(
        self, session: Session, namespace: str, parent_id: str | None, channels: set[str]
    ) -> dict[str, _ListTail]:
        """The list channels of the parent checkpoint, from memory or else from the files."""
        if parent_id is None:
            return {}
        key = (session.id, namespace)
        with self._guard:
            cached = self._tails.get(key)
            if cached is not None and cached[0] == parent_id:
                self._tails.move_to_end(key)
                return dict(cached[1])
        if not channels:
            return {}
        ns = self._namespace(session, namespace)
        parent = ns.by_id.get(parent_id)
        if parent is None:
            return {}
        out: dict[str, _ListTail] = {}
        versions = self._skeleton(parent).get("channel_versions", {})
        for channel in channels:
            if channel not in versions:
                continue
            holder = ns.holder(parent, channel, versions[channel])
            if holder is None:
                continue
            is_list, enc = ns.encoded(holder, channel)
            if is_list:
                out[channel] = _ListTail(holder, versions[channel], enc)
        return out

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, namespace = _thread(config)
        parent_id = get_checkpoint_id(config)
        skeleton: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = skeleton.pop("channel_values", {})
        meta = dict(get_checkpoint_metadata(config, metadata))
        meta.pop("writes", None)  # as every LangGraph saver does: writes are stored apart
        meta_json = _json(meta, "checkpoint metadata")
        session = self._session(thread_id, create=True)
        assert session is not None
        checkpoint_id = str(checkpoint["id"])
        parts: dict[str, Any] = {"checkpoint": self._encode_skeleton(skeleton)}
        lists = {c for c in new_versions if c in values and type(values[c]) is list}
        previous = self._tails_of(session, namespace, parent_id, lists)
        tails: dict[str, _ListTail] = {}
        versions = checkpoint.get("channel_versions", {})
        for channel, tail in previous.items():
            if channel not in new_versions and _vkey(versions.get(channel)) == _vkey(tail.version):
                tails[channel] = tail  # unchanged: the next step may append to it
        for channel, version in new_versions.items():
            if channel not in values:
                continue  # an empty channel (LangGraph's own savers store a marker; we need none)
            value = values[channel]
            if channel in lists:
                items = [self._encode(v) for v in value]
                head: dict[str, Any] = {"v": version}
                base = previous.get(channel)
                keep = _common_prefix(base.items, items) if base is not None else 0
                if base is not None and keep:
                    head.update(keep=keep, base=[base.holder, base.version])
                head["list"] = len(items) - keep
                parts["c:" + channel] = head
                for j, item in enumerate(items[keep:]):
                    parts[f"i{j}:{channel}"] = item
                tails[channel] = _ListTail(checkpoint_id, version, items)
            else:
                kind, data = self._encode(value)
                parts["c:" + channel] = {"v": version, "t": kind, "b": data}
        with self._writer(session.id):
            session.put_checkpoint(
                checkpoint_id, parts, metadata=meta_json, parent_id=parent_id, namespace=namespace
            )
        with self._guard:
            self._tails[(session.id, namespace)] = (checkpoint_id, tails)
            self._tails.move_to_end((session.id, namespace))
            while len(self._tails) > _CACHE_NAMESPACES:
                self._tails.popitem(last=False)
        return _config(thread_id, namespace, checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id, namespace = _thread(config)
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            raise InvalidInput("put_writes needs a config with a checkpoint_id")
        session = self._session(thread_id, create=True)
        assert session is not None
        # LangGraph's rule: a regular write is kept once per (task, index), the first one wins;
        # special writes (errors, interrupts...) have fixed negative indexes and replace.
        with self._writer(session.id):
            merged: dict[int, tuple[str, Any]] = {}
            for task in session.get_writes(checkpoint_id, namespace=namespace):
                if task.task_id == task_id and task.task_path == task_path:
                    for channel, stored in task.writes:
                        merged[int(stored["idx"])] = (channel, stored)
            changed = False
            for i, (channel, value) in enumerate(writes):
                idx = WRITES_IDX_MAP.get(channel, i)
                if idx >= 0 and idx in merged:
                    continue
                merged[idx] = (channel, self._encode_write(idx, value))
                changed = True
            if changed:
                session.put_writes(
                    checkpoint_id,
                    task_id,
                    [merged[i] for i in sorted(merged)],
                    task_path=task_path,
                    namespace=namespace,
                )

    def get_next_version(self, current: str | None, channel: None) -> str:
        # The random suffix keeps two forks of a thread from minting the same version of a
        # channel with different values, as LangGraph's own savers do.
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- deleting and copying ------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        session = self._session(str(thread_id), create=False)
        if session is None:
            return
        self._forget(session.id)
        namespaces = {e.namespace for e in session.list_checkpoints(with_state=False)}
        for namespace in sorted(namespaces):
            session.delete_checkpoints(None, namespace=namespace)

    def _delete(self, session: Session, ns: _Namespace, doomed: set[str]) -> None:
        """Delete ``doomed`` checkpoints, first giving survivors a copy of what they need."""
        if not doomed:
            return
        self._forget(session.id)
        survivors = sorted((s for s in ns.by_id.values() if s.id not in doomed), key=_by_id)
        for s in survivors:
            versions = self._skeleton(s).get("channel_versions", {})
            parts: dict[str, Any] | None = None
            for channel, version in versions.items():
                holder = ns.holder(s, channel, version)
                if holder is None or not doomed.intersection(ns.chain(holder, channel)):
                    continue
                is_list, enc = ns.encoded(holder, channel)
                if parts is None:
                    parts = dict(s.parts)
                _drop_channel(parts, channel)
                if is_list:
                    parts["c:" + channel] = {"v": version, "list": len(enc)}
                    for j, item in enumerate(enc):
                        parts[f"i{j}:{channel}"] = item
                else:
                    parts["c:" + channel] = {"v": version, "t": enc[0], "b": enc[1]}
            if parts is not None:
                session.put_checkpoint(
                    s.id, parts, metadata=s.metadata, parent_id=s.parent_id, namespace=ns.namespace
                )
                ns.replace(_Stored(s.id, s.parent_id, s.metadata, parts, s._skeleton))
        session.delete_checkpoints(sorted(doomed), namespace=ns.namespace)

    def _keep_for_delta_channels(self, ns: _Namespace, latest: _Stored) -> set[str]:
        """``latest`` and the ancestors LangGraph's DeltaChannel replays writes from."""
        keep = {latest.id}
        counters = latest.metadata.get("counters_since_delta_snapshot")
        remaining = set(counters) if isinstance(counters, dict) else set()
        for node in [latest, *ns.ancestors(latest)]:
            if not remaining:
                break
            keep.add(node.id)
            versions = self._skeleton(node).get("channel_versions", {})
            for channel in list(remaining):
                if channel in versions and ns.holder(node, channel, versions[channel]):
                    remaining.discard(channel)
        return keep

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``"keep_latest"`` keeps the newest checkpoint of each namespace (and what a
        DeltaChannel needs to rebuild it); ``"delete"`` deletes every checkpoint."""
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInput(
                f"prune strategy must be 'keep_latest' or 'delete', not {strategy!r}"
            )
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            session = self._session(str(thread_id), create=False)
            if session is None:
                continue
            namespaces = {e.namespace for e in session.list_checkpoints(with_state=False)}
            for namespace in sorted(namespaces):
                ns = self._namespace(session, namespace)
                latest = ns.latest()
                if latest is not None:
                    keep = self._keep_for_delta_channels(ns, latest)
                    self._delete(session, ns, set(ns.by_id) - keep)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        runs = {str(r) for r in run_ids}
        if not runs:
            return
        for _, session in list(self._threads()):
            doomed: dict[str, set[str]] = {}
            for e in session.list_checkpoints(with_state=False):
                if e.metadata.get("run_id") in runs:
                    doomed.setdefault(e.namespace, set()).add(e.checkpoint_id)
            for namespace, ids in sorted(doomed.items()):
                self._delete(session, self._namespace(session, namespace), ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of every namespace, oldest first."""
        source = self._session(str(source_thread_id), create=False)
        if source is None:
            return
        entries = source.list_checkpoints()
        if not entries:
            return
        target = self._session(str(target_thread_id), create=True)
        assert target is not None
        self._forget(target.id)
        for e in sorted(entries, key=lambda e: (e.namespace, e.checkpoint_id)):
            target.put_checkpoint(
                e.checkpoint_id,
                e.state,
                metadata=e.metadata,
                parent_id=e.parent_id,
                namespace=e.namespace,
            )
        for e in entries:
            for task in source.get_writes(e.checkpoint_id, namespace=e.namespace):
                target.put_writes(
                    e.checkpoint_id,
                    task.task_id,
                    task.writes,
                    task_path=task.task_path,
                    namespace=e.namespace,
                )

    # -- async: the sync methods in a worker thread --------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def collect() -> list[CheckpointTuple]:
            return [*self.list(config, filter=filter, before=before, limit=limit)]

        for item in await asyncio.to_thread(collect):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await asyncio.to_thread(
            lambda: self.get_delta_channel_history(config=config, channels=channels)
        )


def _thread(config: RunnableConfig) -> tuple[str, str]:
    configurable = config.get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is None:
        raise InvalidInput(
            "the config has no configurable.thread_id; pass "
            '{"configurable": {"thread_id": "..."}} to the graph'
        )
    namespace = configurable.get("checkpoint_ns") or ""
    return str(thread_id), str(namespace)


def _config(thread_id: str, namespace: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": namespace,
            "checkpoint_id": checkpoint_id,
        }
    }


def _json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``value`` as JSON would give it back (tuples become lists), or a clear refusal."""
    try:
        out = orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    except TypeError as e:
        raise InvalidContent(f"{what} cannot be stored as JSON: {e}") from None
    return out if isinstance(out, dict) else {}


def _vkey(version: Any) -> str:
    return orjson.dumps(version).decode("utf-8")


def _common_prefix(old: list[Encoded], new: list[Encoded]) -> int:
    n = min(len(old), len(new))
    i = 0
    while i < n and old[i] == new[i]:
        i += 1
    return i


def _drop_channel(parts: dict[str, Any], channel: str) -> None:
    head = parts.pop("c:" + channel, None)
    if isinstance(head, dict) and "list" in head:
        for j in range(int(head["list"])):
            parts.pop(f"i{j}:{channel}", None)


def _by_id(s: _Stored) -> str:
    return s.id
