"""Watching a store: notice what other processes append and what a git pull brings.

A watchdog observer (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows)
reports changes to segment files under ``sessions/``. Events are collected for ``debounce``
seconds, then each session they touched is re-read (incrementally: new bytes of hot segments,
new sealed files), compared with what the watcher saw before, and the differences are passed to
the callback as one :class:`WatchEvent`. When the process already uses the query layer, its
catalog and search index are refreshed first, so the callback can search the new messages.

Nothing polls: with no file changes, the watcher's threads are blocked in the kernel (see the
idle-CPU test). The callback runs on the watcher's thread, one event at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from . import layout
from .errors import ConvstoreError, InvalidInput
from .ids import to_us, validate_session_id
from .records import Message

if TYPE_CHECKING:
    from .store import Store

__all__ = ["DEFAULT_DEBOUNCE", "WatchEvent", "Watcher", "watch"]

log = logging.getLogger("convstore.watch")

DEFAULT_DEBOUNCE = 0.05
"""Seconds to gather file events before re-reading: one append or one pull is one event."""

_FIELDS = ("title", "user_id", "org_id", "agent_id", "metadata", "parent")

# Times a session is read again when a file vanishes under the read, before giving up on it.
_RETRIES = 5

# Only events that can mean new bytes. Opens and read-only closes are left out on purpose:
# the watcher's own reads would otherwise wake it up, forever.
_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


@dataclass(frozen=True)
class WatchEvent:
    """What changed in the store since the previous event (or since watching began)."""

    sessions: tuple[str, ...]  # sessions whose visible content changed, sorted
    messages: tuple[Message, ...] = ()  # messages not seen before, oldest first
    edited: tuple[Message, ...] = ()  # messages whose content changed, as they are now
    deleted: tuple[str, ...] = ()  # ids of messages that are gone
    dropped: tuple[str, ...] = ()  # sessions that were deleted

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": list(self.sessions),
            "messages": [{"session_id": m.session_id, **m.to_dict()} for m in self.messages],
            "edited": [{"session_id": m.session_id, **m.to_dict()} for m in self.edited],
            "deleted": list(self.deleted),
            "dropped": list(self.dropped),
        }


@dataclass
class _Seen:
    """What the watcher last saw of one session."""

    versions: dict[str, datetime | None] = field(default_factory=dict)  # id -> edited_at
    fingerprint: tuple[Any, ...] = ()
    dropped: bool = False


class Watcher:
    """Calls ``callback(WatchEvent)`` when the store's files change. Use as a context manager,
    or call :meth:`start` and :meth:`stop`.

    ``sessions`` limits the watch to those sessions (they may not exist yet); by default every
    session is watched, new ones included. ``refresh_index`` refreshes the query layer's catalog
    and index before each callback: ``None`` (default) does it when this process has opened the
    query layer already, so a watcher never starts a full index build on its own.
    """

    def __init__(
        self,
        store: Store,
        callback: Callable[[WatchEvent], None],
        *,
        sessions: Iterable[str] | None = None,
        debounce: float = DEFAULT_DEBOUNCE,
        refresh_index: bool | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not isinstance(debounce, (int, float)) or not 0 <= debounce <= 60:
            raise InvalidInput(f"debounce must be between 0 and 60 seconds, not {debounce!r}")
        self.store = store
        self.callback = callback
        self.debounce = float(debounce)
        self.refresh_index = refresh_index
        self.on_error = on_error
        self.only: frozenset[str] | None = None
        if sessions is not None:
            self.only = frozenset(validate_session_id(s) for s in sessions)
        self.root = store.path / layout.SESSIONS
        self._seen: dict[str, _Seen] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._observer: Any = None
        self._thread: threading.Thread | None = None
        self._watched_folders: set[str] = set()
        self._retries: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Watcher:
        """Start watching. What exists now is the baseline: it is not reported."""
        if self._thread is not None:
            raise ConvstoreError("this watcher is running already")
        self._stopping.clear()
        self._observer = Observer()
        handler = _Handler(self)
        if self.only is None:
            self._observer.schedule(handler, str(self.root), recursive=True, event_filter=_EVENTS)
        else:
            # A folder per watched session (and the sessions folder, for ones not made yet)
            # rather than the whole tree: a recursive watch costs one inotify watch per session.
            self._observer.schedule(handler, str(self.root), event_filter=_EVENTS)
            for sid in sorted(self.only):
                self._watch_folder(sid)
        # The observer runs before the baseline is taken, so nothing written in between is
        # missed: at worst a change is read once more and found to be no change.
        self._observer.start()
        for sid in self.only if self.only is not None else self.store.session_ids():
            try:
                self._seen[sid] = self._look(sid)[0]
            except (InvalidInput, ConvstoreError):
                continue
        self._thread = threading.Thread(target=self._run, name="convstore-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and wait for the watcher's threads (an event in progress finishes)."""
        self._stopping.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            if threading.current_thread() is not self._observer:
                self._observer.join(timeout)
            self._observer = None
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Watcher:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- events ----------------------------------------------------------------------------------

    def _note(self, path: str) -> None:
        """A file event at ``path``: remember its session if the file can hold records."""
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return
        parts = rel.parts
        if not parts or len(parts) > 2:
            return
        sid = parts[0]
        if len(parts) == 2 and not (
            layout.HOT_RE.fullmatch(parts[1]) or layout.SEALED_RE.fullmatch(parts[1])
        ):
            return  # lock files, compaction's temporary files, anything else
        if self.only is not None and sid not in self.only:
            return
        with self._lock:
            self._pending.add(sid)
            self._wake.set()

    def _watch_folder(self, sid: str) -> None:
        folder = self.root / sid
        if (
            sid in self._watched_folders
            or folder.is_symlink()  # a linked session folder is never read (FORMAT.md)
            or not folder.is_dir()
            or self._observer is None
        ):
            return
        self._observer.schedule(_Handler(self), str(folder), event_filter=_EVENTS)
        self._watched_folders.add(sid)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            # Gather what else arrives meanwhile: an append is several events, a pull many.
            if self._stopping.wait(self.debounce):
                return
            with self._lock:
                pending, self._pending = self._pending, set()
                self._wake.clear()
            if pending:
                try:
                    self._process(pending)
                except Exception as e:  # the watcher must outlive one bad event
                    self._report(e)

    def _retry(self, sid: str, error: OSError) -> None:
        tries = self._retries[sid] = self._retries.get(sid, 0) + 1
        if tries > _RETRIES:
            self._retries.pop(sid)
            self._report(error)
            return
        with self._lock:
            self._pending.add(sid)
            self._wake.set()

    def _report(self, error: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(error)
        else:
            log.error("convstore watch: %s", error, exc_info=error)

    def _process(self, pending: set[str]) -> None:
        changed: list[str] = []
        new: list[Message] = []
        edited: list[Message] = []
        deleted: list[str] = []
        dropped: list[str] = []
        for sid in sorted(pending):
            try:
                validate_session_id(sid)
            except InvalidInput:
                continue
            if self.only is not None:
                self._watch_folder(sid)
            before = self._seen.get(sid, _Seen())
            try:
                now, current = self._look(sid, relist=True)
            except OSError as e:
                # A file removed under the read (a compaction, a pull): look again shortly.
                self._retry(sid, e)
                continue
            self._retries.pop(sid, None)
            self._seen[sid] = now
            if now.dropped and not before.dropped:
                dropped.append(sid)
                changed.append(sid)
                continue
            if now.dropped:
                continue
            fresh = [m for mid, m in current.items() if mid not in before.versions]
            changes = [
                m
                for mid, m in current.items()
                if mid in before.versions and before.versions[mid] != m.edited_at
            ]
            gone = [mid for mid in before.versions if mid not in current]
            if fresh or changes or gone or now.fingerprint != before.fingerprint:
                changed.append(sid)
                new.extend(fresh)
                edited.extend(changes)
                deleted.extend(gone)
        if not changed:
            return
        if self.refresh_index or (self.refresh_index is None and self.store._query is not None):
            try:
                self.store.refresh()
            except Exception as e:  # the callback still deserves its event
                self._report(e)
        event = WatchEvent(
            tuple(sorted(changed)),
            tuple(sorted(new, key=lambda m: (to_us(m.created_at), m.id))),
            tuple(edited),
            tuple(deleted),
            tuple(dropped),
        )
        try:
            self.callback(event)
        except Exception as e:
            self._report(e)

    def _look(self, sid: str, *, relist: bool = False) -> tuple[_Seen, dict[str, Message]]:
        """What a session shows now."""
        view = self.store._live_view(validate_session_id(sid), refresh=False)
        with self.store._view_lock(sid):
            if relist:
                # A sealed file that git was still writing at our last listing failed to read
                # and is not in the view; the folder's mtime has not changed since. List again.
                view.listed_mtime_ns = -1
            view.refresh()
            current = {m.id: m for m in view.shown()[1]}
            # What a reader sees besides messages; built from content, not from records, so
            # that a compaction (which rewrites records) does not look like a change.
            fingerprint = (
                tuple(repr(view.field(name)) for name in _FIELDS),
                len(view.states),
                len(view.live_checkpoints(None)),
                len(view.writes),
            )
            seen = _Seen(
                {mid: m.edited_at for mid, m in current.items()},
                fingerprint,
                view.dropped is not None,
            )
        return seen, current


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.watcher._note(os.fsdecode(event.src_path))
        if event.dest_path:
            self.watcher._note(os.fsdecode(event.dest_path))


def watch(store: Store, callback: Callable[[WatchEvent], None], **options: Any) -> Watcher:
    """Start watching ``store``; returns the running :class:`Watcher` (stop it, or use ``with``).

    Options: ``sessions``, ``debounce``, ``refresh_index``, ``on_error`` (see :class:`Watcher`).
    """
    return Watcher(store, callback, **options).start()
