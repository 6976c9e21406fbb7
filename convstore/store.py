"""The store: a folder of sessions, opened by any number of threads and processes at once."""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

import orjson

from . import frames, layout
from .dates import When, parse_range
from .errors import (
    CaseCollision,
    ConvstoreError,
    InvalidContent,
    InvalidInput,
    SessionExists,
    SessionNotFound,
    StoreError,
)
from .ids import (
    fold_case,
    format_us,
    new_id,
    new_ids,
    now_us,
    parse_us,
    to_us,
    validate_new_session_id,
    validate_session_id,
)
from .locks import LockTable, SessionLock
from .records import Draft, JSONDict, Message, check_metadata, draft_record
from .segments import DEFAULT_ROLL_BYTES, Appender
from .session import Session, _check_label, merge_ordered
from .view import Key, SessionView

if TYPE_CHECKING:
    from .check import CheckReport
    from .compaction import CompactReport
    from .query import QueryLayer, QueryResult
    from .retention import PruneReport
    from .search import SearchHit
    from .stats import Stats
    from .watch import Watcher, WatchEvent

Sync = Literal["always", "interval", "close"]
_OPEN_SEGMENTS = 256  # segment descriptors kept open per Store
T = TypeVar("T")
# Views of recently read sessions stay in memory (that is what makes recent(20) cost a stat).
# They are bounded by session count and by the messages they hold, so that a process that
# reads a whole large store (an export, a benchmark) does not keep all of it in memory.
_VIEW_CACHE = 4096
_VIEW_MESSAGES = 250_000
# Lock names of the case-folded ids: session ids cannot start with '~', so these never clash
# with a session's own lock.
_FOLD = "~case."


class Written(NamedTuple):
    """What ``Store._write`` wrote of one record."""

    id: str
    at_us: int
    fields: JSONDict  # the record's members after its head, as they read back from the bytes
    message: Message | None  # a new message as the session's view now holds it, if it does


class Store:
    """A convstore store: a plain folder that holds every session's history.

    ``sync`` sets durability: ``"always"`` (default) fsyncs before every write returns, as
    SQLite does by default; ``"interval"`` fsyncs in the background every ``sync_interval``
    seconds and on close; ``"close"`` only on ``flush()`` and ``close()``. A process crash
    never tears a record in any mode; the relaxed modes may lose the last writes on power loss.

    A hot segment is closed when it passes ``roll_bytes`` (8 MiB by default); with
    ``auto_compact`` (the default) that session is then sealed into Parquet by a background
    thread of the writing process (docs/COMPACTION.md).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        sync: Sync = "always",
        sync_interval: float = 1.0,
        roll_bytes: int = DEFAULT_ROLL_BYTES,
        auto_compact: bool = True,
    ) -> None:
        if sync not in ("always", "interval", "close"):
            raise InvalidInput(f"sync must be 'always', 'interval' or 'close', not {sync!r}")
        self.path = Path(path).expanduser() if path is not None else layout.default_path()
        self.read_only = _read_only(self.path)
        if self.read_only:
            layout.read_marker(self.path)
        else:
            try:
                layout.init_folder(self.path)
            except OSError as e:
                raise StoreError(
                    f"cannot create a store at {self.path}: {e.strerror or e}; choose a "
                    "folder you can write to"
                ) from None
        # The folder whose .cache/ holds this clone's local state (writer id, locks, catalog,
        # index): the store itself, or for a read-only store one under the user's cache.
        self.cache_root = _local_cache_root(self.path) if self.read_only else self.path
        # The folder this Store opened, by identity: a write refuses to go on once the path
        # names another folder (or none), rather than start a ghost store nobody reads.
        root = os.stat(self.path)
        self._root_id = (root.st_dev, root.st_ino)
        self._root = os.fspath(self.path)
        if not isinstance(roll_bytes, int) or roll_bytes < 1:
            raise InvalidInput(f"roll_bytes must be a positive integer, not {roll_bytes!r}")
        self.sync = sync
        self.roll_bytes = roll_bytes
        self.auto_compact = auto_compact
        self._writer: str | None = None
        self._current_format = False
        self._locks = LockTable(
            self.cache_root / layout.CACHE / "locks" / "sessions", root=self.cache_root
        )
        self._appenders: OrderedDict[str, Appender] = OrderedDict()
        self._open_fds: set[str] = set()
        self._views: OrderedDict[str, SessionView] = OrderedDict()
        self._view_locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._query: QueryLayer | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._sync_interval = sync_interval
        # The session folder names by case-folded id, and the folder's stat when listed.
        self._folded: tuple[tuple[int, int, int], dict[str, list[str]]] | None = None
        if sync == "interval":
            self._start_flusher()
        _STORES.add(self)

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def writer_id(self) -> str:
        """This clone's writer identity (kept in ``.cache/writer_id``)."""
        if self._writer is None:
            self._writer = layout.writer_id(self.cache_root)
        return self._writer

    def _migrated(self) -> None:
        """Before the first write of this Store (an append, a compaction): an older store's
        marker moves to the current format version. Readers never write it."""
        if not self._current_format:
            layout.migrate(self.path)
            self._current_format = True

    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise StoreError(
                f"the store at {self.path} is read-only: cannot {what}. Reads work; to write, "
                "remount it read-write or copy it to a writable folder"
            )

    def flush(self) -> None:
        """fsync every segment written since the last flush (for the relaxed sync modes)."""
        with self._guard:
            appenders = list(self._appenders.values())
        for ap in appenders:
            ap.sync()

    def _start_flusher(self) -> None:
        with self._guard:
            if self._flusher is not None:
                return
            self._stop = threading.Event()
            self._flusher = threading.Thread(
                target=self._flush_loop,
                args=(self._stop, self._sync_interval),
                name="convstore-sync",
                daemon=True,
            )
            self._flusher.start()

    def _flush_loop(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            self.flush()

    def _after_fork(self) -> None:
        """Make a forked child's copy of the store safe to use.

        Locks and descriptors inherited from the parent must not be used: flock is shared with
        the parent through the inherited descriptor, and another parent thread may have held a
        threading lock at the moment of the fork. Views are dropped too (they may have been
        mid-update); the child rebuilds what it reads.

        The query layer is abandoned, never closed: DuckDB and tantivy objects own threads
        that do not exist in the child and mutexes another parent thread may have held, so
        running their destructors here crashes (SIGSEGV) or hangs. The child opens its own
        connections and index readers when it next queries.
        """
        self._guard = threading.Lock()
        self._locks.after_fork()
        for ap in self._appenders.values():
            ap.forget_after_fork()
        self._appenders.clear()
        self._open_fds.clear()
        self._views.clear()
        self._view_locks.clear()
        self._local = threading.local()
        # The parent's flusher thread is gone and may have held its Event's lock; the child
        # starts its own at its first write (_write).
        self._stop = threading.Event()
        self._flusher = None
        if self._query is not None:
            abandon(self._query)
        self._query = None

    def close(self) -> None:
        """Flush and release files and locks. The store can still be used (it reopens lazily)."""
        self._stop.set()
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.join()
        if "convstore.compaction" in sys.modules:  # a background compaction may be running
            sys.modules["convstore.compaction"].wait_for_background(self)
        with self._guard:
            appenders = list(self._appenders.values())
            self._appenders.clear()
            self._open_fds.clear()
        for ap in appenders:
            ap.close()
        self._locks.close()
        if self._query is not None:
            self._query.close()
            self._query = None

    # -- sessions ------------------------------------------------------------------------------

    def _session_folder(self, session_id: str) -> Path:
        return self.path / layout.SESSIONS / session_id

    def create_session(
        self,
        session_id: str | None = None,
        *,
        title: str | None = None,
        user_id: str | None = None,
        org_id: str | None = None,
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        created_at: When | None = None,
        _parent: JSONDict | None = None,
    ) -> Session:
        """Create a session (with a new id unless one is given) and return it."""
        self._refuse_if_read_only("create a session")
        sid = new_id() if session_id is None else validate_new_session_id(session_id)
        fields: JSONDict = {
            "title": _check_label(title, "title", 1000),
            "user_id": _check_label(user_id, "user_id", 256),
            "org_id": _check_label(org_id, "org_id", 256),
            "agent_id": _check_label(agent_id, "agent_id", 256),
            "metadata": check_metadata(metadata),
        }
        if _parent is not None:
            fields["parent"] = _parent
        at = None
        if created_at is not None:
            at = parse_range(created_at, None)[0]
        record = self._record("session", sid, at_us=at, **fields)
        folder = self._session_folder(sid)
        self._check_root()
        # The fold lock keeps two processes from creating 'abc' and 'ABC' at the same moment.
        with self._locks.get(_FOLD + fold_case(sid)), self._locks.get(sid):
            self._check_root()  # before mkdir: a moved store must not grow a ghost folder
            twin = self._case_twin(sid)
            if twin is not None:
                raise CaseCollision(
                    f"session {sid!r} differs only by case from session {twin!r} in "
                    f"{self.path}; on macOS and Windows both would be one folder. Choose "
                    f"another id or open it with store.session({twin!r})"
                )
            with self._reading(sid) as view:
                exists, dropped = view.exists, view.dropped is not None
            if exists:
                state = "was deleted" if dropped else "exists"
                raise SessionExists(
                    f"session {sid!r} {state} in {self.path}; choose another id"
                    + ("" if dropped else f" or open it with store.session({sid!r})")
                )
            if layout.private_dir(folder, below=folder.parent):  # refuses a linked folder
                layout.fsync_dir(folder.parent)
                self._note_folder(sid)
            self._write(sid, [record])
        return Session(self, sid)

    def _case_twin(self, sid: str) -> str | None:
        """Another session whose id differs from ``sid`` only by case (call under the fold lock).

        Two sources, because a listing cached by the folder's stat can miss a folder made in
        the same clock tick: the claim a creator in this clone leaves under the fold lock, and
        the folder listing, which also sees folders that arrived by git.
        """
        fold = fold_case(sid)
        try:
            claimed = layout.read_bytes(self._claim(fold)).decode("ascii").strip()
        except (OSError, UnicodeDecodeError, ConvstoreError):
            claimed = ""
        same = claimed and claimed != sid and fold_case(claimed) == fold
        if same and self._session_folder(claimed).is_dir():
            return claimed
        folder = self.path / layout.SESSIONS
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_nlink)
        cached = self._folded
        if cached is None or cached[0] != key:
            by_fold: dict[str, list[str]] = {}
            for name in layout.list_names(folder):
                by_fold.setdefault(fold_case(name), []).append(name)
            cached = self._folded = (key, by_fold)
        return next((n for n in cached[1].get(fold, ()) if n != sid), None)

    def _claim(self, fold: str) -> Path:
        return self._locks.folder / f"{_FOLD}{fold}.id"

    def _note_folder(self, sid: str) -> None:
        """After creating ``sid``'s folder: claim its fold, and keep the cached listing."""
        fold = fold_case(sid)
        # The cache may be gone, or the claim a link: the listing sees the folder anyway.
        claim = self._claim(fold)
        with contextlib.suppress(OSError, ConvstoreError), layout.create_file(claim) as fh:
            fh.write(sid.encode("ascii") + b"\n")
        cached = self._folded
        if cached is not None:
            st = os.stat(self.path / layout.SESSIONS)
            cached[1].setdefault(fold, []).append(sid)
            self._folded = ((st.st_ino, st.st_mtime_ns, st.st_nlink), cached[1])

    def session(self, session_id: str) -> Session:
        """The session with this id; raises SessionNotFound."""
        sid = validate_session_id(session_id)
        with self._reading(sid) as view:
            gone = not view.exists or view.dropped is not None
        if gone:
            raise SessionNotFound(
                f"no session {sid!r} in {self.path}; list them with `convstore ls` "
                "or store.sessions()"
            )
        return Session(self, sid)

    def __contains__(self, session_id: object) -> bool:
        if not isinstance(session_id, str):
            return False
        try:
            self.session(session_id)
        except (SessionNotFound, InvalidInput):
            return False
        return True

    def session_ids(self) -> list[str]:
        """Ids of every session folder, deleted ones included (cheap: one directory listing)."""
        try:
            names = layout.list_names(self.path / layout.SESSIONS)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith("."))

    def sessions(
        self,
        *,
        user_id: str | None = None,
        org_id: str | None = None,
        since: When | None = None,
        until: When | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Session]:
        """Sessions, newest activity first; ``since``/``until`` bound the last activity."""
        lo, hi = parse_range(since, until)
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative integer, not {limit!r}")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidInput(f"offset must be a non-negative integer, not {offset!r}")
        # One catalog query after an incremental refresh, rather than replaying every
        # session's files: listing stays fast on stores of many thousands of sessions.
        ids = self._query_layer().sessions(
            user_id=user_id, org_id=org_id, since=lo, until=hi, limit=limit, offset=offset
        )
        return [Session(self, sid) for sid in ids]

    def delete_session(self, session_id: str) -> None:
        """Delete a session: hidden at once everywhere, its bytes purged by compaction.

        Its branches are not deleted, and they keep showing the history they inherited from
        it (text included: compaction keeps what a live branch shows); ``branches(id)`` names
        them, so that a caller can tell its user and delete them too.
        """
        sid = validate_session_id(session_id)
        with self._locks.get(sid):  # so that two deletes do not both write a drop
            self.session(sid)
            self._write(sid, [self._drop_record(sid)])

    def _drop_record(self, sid: str) -> JSONDict:
        """A ``drop`` of ``sid`` that covers every record this process has seen of it (call
        holding the session lock, with the view caught up): imported records keep their
        original time in their id, which may lie after the moment of the delete."""
        with self._reading(sid) as view:
            covers = view.newest_id
        return self._record("drop", sid, covers=covers or None)

    def branches(self, session_id: str) -> list[str]:
        """Ids of the live sessions that show ``session_id``'s messages: its branches, their
        branches, and so on, sorted. ``session_id`` itself may be deleted (its branches keep
        showing what they inherited: ``convstore rm`` names them). One catalog query."""
        sid = validate_session_id(session_id)
        parents = self._query_layer().branch_parents()
        found: set[str] = set()
        todo = [sid]
        while todo:
            current = todo.pop()
            for branch, parent in parents.items():
                if parent == current and branch not in found:
                    found.add(branch)
                    todo.append(branch)
        return sorted(found)

    def branch(
        self,
        session_id: str,
        at: str | None = None,
        *,
        branch_id: str | None = None,
        title: str | None = None,
    ) -> Session:
        """A new session that shares ``session_id``'s history up to message ``at`` (default:
        its last message) without copying it, and records its parent."""
        sid = validate_session_id(session_id)
        bid = new_id() if branch_id is None else validate_session_id(branch_id)
        # The source's lock is held from its check to the branch's first record: a delete of
        # the source comes wholly before (the branch is refused) or after (the branch keeps
        # what it inherits, as for any branch of a session deleted later).
        with self._locked([sid, bid]):
            return self._branch(sid, at, bid, title)

    def _branch(self, session_id: str, at: str | None, bid: str, title: str | None) -> Session:
        source = self.session(session_id)
        ordered = source.messages()
        if at is None:
            if not ordered:
                raise InvalidInput(f"session {session_id!r} has no messages to branch from")
            at = ordered[-1].id
        point = next((m for m in ordered if m.id == at), None)
        if point is None:
            raise InvalidInput(
                f"message {at!r} is not in session {session_id!r}; pass one of its ids"
            )
        return self.create_session(
            bid,
            title=title if title is not None else f"{source.title or source.id} (branch)",
            user_id=source.user_id,
            org_id=source.org_id,
            agent_id=source.agent_id,
            metadata=source.metadata,
            # The branch point's time is kept too: if the parent later deletes that message,
            # the branch still knows where its inherited history ends.
            _parent={
                "session": source.id,
                "message": at,
                "created_at": format_us(to_us(point.created_at)),
            },
        )

    def merge(
        self,
        session_ids: Iterable[str],
        *,
        session_id: str | None = None,
        title: str | None = None,
    ) -> Session:
        """A new session interleaving the given sessions' messages by time, with provenance.

        Each copied message keeps its role, content and time; its metadata gains
        ``merged_from: {"session": ..., "message": ...}``. A message that several sources
        hold (a branch holds its parent's history up to the branch point) is copied once.
        """
        sids = [validate_session_id(s) for s in session_ids]
        new_sid = new_id() if session_id is None else validate_session_id(session_id)
        check_merge_sources(sids)
        # Every source stays locked until the copy is written: a source deleted meanwhile
        # (and perhaps compacted) cannot leave the merge with part of its messages.
        with self._locked([*sids, new_sid]):
            return self._merge(sids, new_sid, title)

    def _merge(self, sids: list[str], session_id: str, title: str | None) -> Session:
        sources = [self.session(s) for s in sids]
        ordered = merge_ordered([s.messages() for s in sources])
        # A branch does not copy its parent's messages, it refers to them: both sources give
        # the same message (same session of origin, same id), which must be merged once.
        seen: set[tuple[str, str]] = set()
        unique = []
        for m in ordered:
            if (m.session_id, m.id) not in seen:
                seen.add((m.session_id, m.id))
                unique.append(m)
        first = sources[0]
        new = self.create_session(
            session_id,
            title=title or "merge of " + ", ".join(s.id for s in sources),
            user_id=first.user_id,
            org_id=first.org_id,
            agent_id=first.agent_id,
            metadata={"merged_from": [s.id for s in sources]},
        )
        new.extend(
            {
                "role": m.role,
                "content": m.content,
                "metadata": {
                    **m.metadata,
                    "merged_from": {"session": m.session_id, "message": m.id},
                },
                "created_at": m.created_at,
            }
            for m in unique
        )
        return new

    def lock(self, session_id: str) -> SessionLock:
        """The session's write lock, for read-modify-write sequences across processes.

        ``with store.lock(sid): ...`` excludes every other appender to that session, in this
        process and others. Appends made while holding it re-enter it.
        """
        return self._locks.get(validate_session_id(session_id))

    # -- reading -------------------------------------------------------------------------------

    def _view_lock(self, sid: str) -> threading.RLock:
        with self._guard:
            lock = self._view_locks.get(sid)
            if lock is None:
                lock = self._view_locks[sid] = threading.RLock()
            return lock

    def _live_view(self, sid: str, *, refresh: bool = True) -> SessionView:
        """The cached view of a session, brought up to date with the files."""
        with self._guard:
            view = self._views.get(sid)
            if view is None:
                view = SessionView(sid, self._session_folder(sid), self.writer_id)
                self._views[sid] = view
                self._evict_views()
            else:
                self._views.move_to_end(sid)
        if refresh:
            with self._view_lock(sid):
                view.refresh()
        return view

    @contextmanager
    def _reading(self, sid: str) -> Iterator[SessionView]:
        """The session's view, refreshed and used under one hold of its lock.

        A refresh that finds a file gone (a compaction, a prune) rebuilds the view from
        empty; a check made on the view after the lock was let go could see that rebuild
        half-way and report a session or message missing that never was.
        """
        view = self._live_view(sid, refresh=False)
        with self._view_lock(sid):
            view.refresh()
            yield view

    @contextmanager
    def _locked(self, sids: Iterable[str]) -> Iterator[None]:
        """The session locks of several sessions, always taken in sorted order (no deadlock)."""
        with ExitStack() as stack:
            for sid in sorted(set(sids)):
                stack.enter_context(self._locks.get(sid))
            yield

    def _evict_views(self) -> None:
        # Called with self._guard held, when a view is added. Evicted views are only dropped
        # from the cache: a Session handle re-reads its files on its next use.
        while len(self._views) > _VIEW_CACHE:
            self._views.popitem(last=False)
        held = sum(len(v.messages) for v in self._views.values())
        while held > _VIEW_MESSAGES and len(self._views) > 1:
            _, old = self._views.popitem(last=False)
            held -= len(old.messages)

    def _ordered(self, sid: str, _seen: frozenset[str] = frozenset()) -> list[Message]:
        """A session's messages in order, a branch's inherited ones included."""
        return self._select(sid, lambda keys, msgs: list(msgs), _seen)

    def _select(
        self,
        sid: str,
        pick: Callable[[list[Key], list[Message]], T],
        _seen: frozenset[str] = frozenset(),
    ) -> T:
        """Apply ``pick`` to a session's ordered (keys, messages).

        For a plain session ``pick`` runs on the view's own lists under the view lock, so that
        recent(20) of a million-message session slices 20 items instead of copying a million.
        For a branch the lists are built by merging the inherited prefix with its own messages.
        """
        with self._reading(sid) as view:
            if _seen:
                # Inherited by a branch: the history as it was written, even if this session
                # was deleted since (a branch keeps what it inherits: COMPACTION.md).
                parent = view.lineage_field("parent")
                keys, order = view.order_keys, view.order
            else:
                parent = view.field("parent")
                keys, order = view.shown()
            if not parent or sid in _seen:
                return pick(keys, order)
            own = list(order)
            made = view.meta["parent"][0]  # the record that made this session a branch
        psid, at = parent["session"], parent["message"]
        inherited = self._ordered(psid, _seen | {sid})
        with self._reading(psid) as pview:
            cover = pview.drop_id
        if cover is not None and made > cover:
            # Branched after its parent was deleted (and revived by a clone that had not seen
            # the delete): it inherits what the parent showed then, not what the delete covers.
            inherited = [m for m in inherited if m.id > cover]
        keys = [(to_us(m.created_at), m.id) for m in inherited]
        if isinstance(parent.get("created_at"), str):
            cut = bisect.bisect_right(keys, (parse_us(parent["created_at"]), at))
        else:
            cut = next((i + 1 for i, m in enumerate(inherited) if m.id == at), 0)
        merged = merge_ordered([inherited[:cut], own]) if own else inherited[:cut]
        return pick([(to_us(m.created_at), m.id) for m in merged], merged)

    # -- writing -------------------------------------------------------------------------------

    def _check_root(self) -> None:
        """Refuse to write when the store's path no longer names the folder that was opened."""
        try:
            st = os.stat(self._root)
            same = (st.st_dev, st.st_ino) == self._root_id
        except FileNotFoundError:
            same = False
        if not same:
            raise StoreError(
                f"the store folder {self.path} was moved or replaced since this Store opened "
                "it; nothing was written. Reopen the store at its new path"
            )

    def _record(self, kind: str, sid: str, *, at_us: int | None = None, **fields: Any) -> JSONDict:
        """A record to pass to ``_write``; its id (and time, unless given) are set there."""
        return {
            "id": None,
            "kind": kind,
            "session": sid,
            "created_at": None if at_us is None else format_us(at_us),
            **{k: v for k, v in fields.items() if v is not None or k == "checkpoint_ids"},
        }

    def _compressor(self) -> Any:
        comp = getattr(self._local, "compressor", None)
        if comp is None:
            comp = self._local.compressor = frames.new_compressor()
        return comp

    def _appender(self, sid: str) -> Appender:
        """The session's appender; call with the session lock held."""
        with self._guard:
            ap = self._appenders.get(sid)
            if ap is None:
                ap = Appender(self._session_folder(sid), self.writer_id, self.roll_bytes)
                self._appenders[sid] = ap
            else:
                self._appenders.move_to_end(sid)
            self._open_fds.add(sid)
            if len(self._open_fds) > _OPEN_SEGMENTS:
                self._release_fds(keep=sid)
            return ap

    def _release_fds(self, keep: str) -> None:
        # Called with self._guard held. Bounds the segment descriptors this process keeps
        # open (a server may write to thousands of sessions). Appender objects are kept: they
        # remember where their segment ended, so reopening does not re-read it. A descriptor
        # in use by another thread is skipped.
        for sid in list(self._appenders):
            if len(self._open_fds) <= _OPEN_SEGMENTS // 2:
                break
            if sid != keep and sid in self._open_fds and self._appenders[sid].release_fd():
                self._open_fds.discard(sid)

    def _write(
        self,
        sid: str,
        records: Sequence[JSONDict | Draft],
        *,
        allow_dropped: bool = False,
    ) -> list[Written]:
        """Stamp ``records`` with ids and times, and append them as one frame.

        ``records`` are record dicts (``id`` and ``created_at`` may be None: given here, and
        set in the dict) or new messages already checked and encoded
        (``records.message_draft``). Everything that can refuse the input is checked and
        encoded before the lock is taken, so a refusal writes nothing and the lock is held
        only to stamp, frame and write. Ids and default times are given under the session
        lock, so that the order of records in a session's files is also the order of their
        times: a reader paging forward from a message it has seen never misses one written
        after it. Writing to a deleted session is refused unless ``allow_dropped`` (retention
        writing tombstones for a deleted parent's messages that a live branch still shows).
        """
        self._refuse_if_read_only(f"write to session {sid!r}")
        sid_json = orjson.dumps(sid)
        drafts = [r if isinstance(r, Draft) else draft_record(r, sid_json) for r in records]
        self._migrated()
        with self._locks.get(sid):
            # Under the lock, the checks cannot go stale before the bytes are written: the
            # store is still where it was opened, and the session has not been deleted by
            # another process of this clone or by a clone whose files a sync brought in.
            # Catching the view up costs a stat of the folder and of each open segment.
            self._check_root()
            with self._reading(sid) as view:
                dropped = view.dropped is not None
            if dropped and not allow_dropped:
                raise SessionNotFound(
                    f"session {sid!r} was deleted (by this or another process, or a synced "
                    f"clone) in {self.path}; nothing was written. Create a new session for "
                    "what follows"
                )
            # One clock reading and one read of the random source for the whole batch: each
            # record gets the next microsecond, and 48 random bits for its id.
            first = now_us(len(drafts))
            fresh = new_ids(first, len(drafts))
            head = f'","session":{sid_json.decode()},"created_at":"'
            lines: list[bytes] = []
            stamps: list[tuple[str, int]] = []
            texts: list[str] = []
            for i, d in enumerate(drafts):
                rid = d.id or fresh[i]
                at = first + i if d.at_us is None else d.at_us
                at_text = format_us(at)
                line = f'{{"id":"{rid}","kind":"{d.kind}{head}{at_text}"'
                lines.append(line.encode() + d.body)
                stamps.append((rid, at))
                texts.append(at_text)
            payload = b"".join(lines)
            frame = frames.encode_frame(payload, self._compressor())
            if len(payload) > frames.inflate_limit(len(frame)):
                # Readers refuse such a frame as a decompression bomb (frames.py).
                raise InvalidContent(
                    f"these {len(records)} records make {len(payload):,} bytes that compress "
                    f"over {frames.MAX_INFLATE_RATIO} times; append them in smaller batches; "
                    "nothing was written"
                )
            appender = self._appender(sid)
            rolls = appender.rolls
            name, start, end = appender.append(frame, sync=self.sync == "always")
            for r, (rid, _), at_text in zip(records, stamps, texts, strict=True):
                if not isinstance(r, Draft):
                    r["id"], r["created_at"] = rid, at_text
            shown = self._note_append(sid, name, start, end, len(payload), records, drafts, stamps)
            # Only a roll of our own (the segment passed roll_bytes) starts a compaction: the
            # first append after another process sealed this session moves on to the next
            # segment too, and compacting again then would rewrite the sealed file for it.
            rolled = appender.rolls != rolls
        if self.sync == "interval" and self._flusher is None:
            self._start_flusher()
        if rolled and self.auto_compact:
            # The segment passed roll_bytes: seal it in the background (compaction.py).
            from .compaction import on_segment_rolled

            on_segment_rolled(self, sid)
        return [
            Written(rid, at, d.fields, m)
            for (rid, at), d, m in zip(stamps, drafts, shown or [None] * len(drafts), strict=True)
        ]

    def _note_append(
        self,
        sid: str,
        name: str,
        start: int,
        end: int,
        raw: int,
        records: Sequence[JSONDict | Draft],
        drafts: list[Draft],
        stamps: list[tuple[str, int]],
    ) -> list[Message | None] | None:
        """Apply our own append to the cached view, when the view had read up to it.

        New messages (drafts) were checked before they were written and have fresh ids: they
        go in the short way, and the Message the view now holds is returned, to be shared
        with the caller (None for other records; None for all if the view was not updated).
        Other records are replayed as a reader would from the bytes written, never from the
        caller's objects, which the caller may still change.
        """
        with self._guard:
            view = self._views.get(sid)
        if view is None:
            return None
        with self._view_lock(sid):
            if view.hot_offsets.get(name) != start or view._stale:
                return None
            shown: list[Message | None] = []
            if len(records) > 1 and all(type(r) is Draft for r in records):  # an extend
                batch = [
                    (rid, at, d.fields, d.when) for d, (rid, at) in zip(drafts, stamps, strict=True)
                ]
                shown.extend(view.add_new_messages(batch))
            else:
                for r, d, (rid, at) in zip(records, drafts, stamps, strict=True):
                    if isinstance(r, Draft):
                        shown.append(view.add_new_message(rid, at, d.fields, d.when))
                    else:
                        view.apply({**r, **d.fields})
                        shown.append(None)
            view.hot_offsets[name] = end
            view.raw_bytes += raw
            view.version += 1
            return shown

    # -- checking ------------------------------------------------------------------------------

    def check(self, *, repair: bool = False) -> CheckReport:
        """Re-derive every invariant from the files; with ``repair``, fix what can be fixed."""
        from .check import check_store

        if repair:
            self._refuse_if_read_only("repair it")
        return check_store(self, repair=repair)

    # -- the query layer (query.py): a derived, rebuildable cache -------------------------------

    def _query_layer(self) -> QueryLayer:
        with self._guard:
            if self._query is None:
                from .query import QueryLayer

                self._query = QueryLayer(self)
            return self._query

    def refresh(self) -> None:
        """Bring the catalog and search index up to date with the files (incremental)."""
        self._query_layer().refresh()

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Drop the derived catalog and search index and rebuild them from the files."""
        self._query_layer().reindex(progress=progress)

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> QueryResult:
        """Run SQL over the catalog (tables: sessions, messages, states, checkpoints)."""
        return self._query_layer().sql(query, params)

    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        org_id: str | None = None,
        role: str | None = None,
        since: When | None = None,
        until: When | None = None,
        limit: int = 20,
        order: Literal["relevance", "newest"] = "relevance",
    ) -> list[SearchHit]:
        """Ranked full-text search (BM25) over every message, with highlighted snippets."""
        return self._query_layer().search(
            query,
            session_id=session_id,
            user_id=user_id,
            org_id=org_id,
            role=role,
            since=since,
            until=until,
            limit=limit,
            order=order,
        )

    def stats(
        self,
        *,
        user_id: str | None = None,
        org_id: str | None = None,
        since: When | None = None,
        until: When | None = None,
    ) -> Stats:
        """Statistics over the store (or a user, an org, a time window)."""
        return self._query_layer().stats(user_id=user_id, org_id=org_id, since=since, until=until)

    # -- maintenance (compaction.py, retention.py, watch.py) -----------------------------------

    def compact(self, session_id: str | None = None) -> CompactReport:
        """Seal hot segments into content-named Parquet and purge deleted and edited content."""
        from .compaction import compact

        self._refuse_if_read_only("compact it")
        return compact(self, session_id)

    def prune(
        self,
        older_than: When = "90d",
        *,
        user_id: str | None = None,
        org_id: str | None = None,
        dry_run: bool = False,
    ) -> PruneReport:
        """Delete messages older than ``older_than`` (retention); compaction removes the bytes."""
        from .retention import prune

        if not dry_run:
            self._refuse_if_read_only("prune it")
        return prune(self, older_than, user_id=user_id, org_id=org_id, dry_run=dry_run)

    def watch(self, callback: Callable[[WatchEvent], None], **options: Any) -> Watcher:
        """Call ``callback`` when other processes or a git pull change the store."""
        from .watch import watch

        return watch(self, callback, **options)


def check_merge_sources(session_ids: Sequence[str]) -> None:
    """Refuse a merge of fewer than two sessions, or one that names a session twice."""
    if len(session_ids) < 2:
        raise InvalidInput("merge needs at least two sessions")
    for i, sid in enumerate(session_ids):
        if sid in session_ids[:i]:
            raise InvalidInput(f"session {sid!r} is given twice; name each session once")


def _read_only(root: Path) -> bool:
    """An existing store that this process cannot write: a read-only mount, or permissions.

    access() answers for the file system too (EROFS), also for root, whom permissions do not
    stop. A folder that is not a store yet is never read-only here: creating it reports why.
    """
    if not (root / layout.MARKER).exists():
        return False
    sessions = root / layout.SESSIONS
    folders = [root, sessions] if sessions.exists() else [root]
    return not all(os.access(f, os.W_OK) for f in folders)


def _local_cache_root(root: Path) -> Path:
    """Where a read-only store keeps its local cache: under the user's cache folder, named by
    the store's real path and its sessions folder's identity (device and inode), so that two
    stores never share a cache and a store replaced at the same path gets a fresh one."""
    import hashlib

    import platformdirs

    real = root.resolve()
    try:
        st = os.stat(real / layout.SESSIONS)
        identity = f"{st.st_dev}:{st.st_ino}"
    except OSError:
        identity = "-"
    key = hashlib.sha256(f"{real}\0{identity}".encode()).hexdigest()[:32]
    base = Path(platformdirs.user_cache_dir("convstore", appauthor=False)) / "read-only"
    folder = base / key
    # Derived copies of the conversations live here: private, like the store (0700).
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    os.chmod(folder, 0o700)
    return folder


_STORES: weakref.WeakSet[Store] = weakref.WeakSet()
# What a forked child inherited and must never destroy (see Store._after_fork). The list holds
# one extra reference that nothing releases, so that not even the interpreter's finalisation at
# the child's exit frees what it holds.
_ABANDONED: list[object] = []
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_ABANDONED))


def abandon(obj: object) -> None:
    """Keep ``obj`` alive for the rest of this (forked) process, destructors never run."""
    _ABANDONED.append(obj)


def _reset_after_fork() -> None:
    for store in list(_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
