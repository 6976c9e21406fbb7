"""Incremental ingest: find what changed in the session folders and turn it into catalog rows.

The current view of a session is never re-derived here: sessions are replayed by
``view.SessionView`` (edits, tombstones, drops, duplicates across clones), through a subclass that
also notes which messages the records it read touched. The catalog is then *diffed* against that
view, so a refresh writes only rows that really changed, and two processes that both read the
same new bytes agree on the result.

How a refresh finds changes, for each session folder:

- a session whose view this process holds (``Views``, an LRU) is refreshed by the view itself:
  one ``stat`` of the folder and one per open hot segment, then only the appended bytes are read;
- any other session is compared with the positions the catalog recorded (``folders`` and
  ``files``): the same ``stat`` calls, and the folder is listed again only when its mtime moved
  (or is too recent to trust: the racy-mtime rule of view.py). When something changed, the whole
  session is read into a fresh view and diffed against its rows;
- a folder that disappeared, a file that disappeared, shrank or was replaced (compaction sealed
  it, prune or a git pull removed it) makes the view start over, and the diff removes every row
  it no longer has;
- except when this clone's compactions left notes that explain the change exactly
  (``sealnotes.py``, :func:`reseal`): the sealed file reads like the inputs it replaced, so only
  the positions change and no record is read.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .catalog import TABLES, Catalog, Row, TableChanges
from .errors import InvalidInput
from .ids import from_us, to_us, validate_session_id
from .layout import HOT_RE, SEALED_RE, list_names
from .records import Message, encode_json
from .sealnotes import SealNote
from .segments import END_MARKER
from .view import SessionView

_RACY_NS = 2_000_000_000  # as in view.py

# (user_id, org_id, agent_id, title): copied into every message row or index document.
Fields = tuple[Any, Any, Any, Any]


# -- positions: how far every file was read ---------------------------------------------------


@dataclass
class FilePos:
    """What was ingested from one segment file."""

    kind: str  # "hot" or "sealed"
    size: int  # its size when last looked at
    ingested: int  # hot: bytes read up to (a torn tail is left out); sealed: its size
    raw_bytes: int = 0  # uncompressed JSON read from it
    records: int = 0
    closed: bool = False  # a hot segment that ended with an end marker never changes again
    inode: int = 0  # the same name on another file (a restore, a checkout) means read again


@dataclass
class FolderPos:
    """What was ingested from one session folder."""

    mtime_ns: int
    listed_at_ns: int
    files: dict[str, FilePos] = field(default_factory=dict)


def load_positions(catalog: Catalog) -> dict[str, FolderPos]:
    """Every folder's positions, as the current catalog records them (cached on the catalog)."""
    if catalog.positions is not None:
        _replay(catalog.positions, catalog.position_log)
        catalog.position_log.clear()
        return catalog.positions
    out: dict[str, FolderPos] = {}
    for sid, mtime, listed in catalog.rows(
        f"SELECT session_id, mtime_ns, listed_at_ns FROM ({catalog.live_rows('folders')})"
    ):
        out[sid] = FolderPos(mtime, listed)
    for sid, name, kind, size, ingested, raw, records, closed, inode in catalog.rows(
        "SELECT session_id, name, kind, size, ingested, raw_bytes, records, closed, inode "
        f"FROM ({catalog.live_rows('files')})"
    ):
        folder = out.get(sid)
        if folder is not None:
            folder.files[name] = FilePos(
                kind, size, ingested, raw, records, bool(closed), inode or 0
            )
    catalog.positions = out
    catalog.position_log.clear()
    return out


def _replay(positions: dict[str, FolderPos], log: list[tuple[str, list[Any], list[Row]]]) -> None:
    """Apply the position changes of parts loaded since the positions were read."""
    for table, removed, rows in log:
        if table == "files":
            for key in removed:
                sid, _, name = key.partition("/")
                folder = positions.get(sid)
                if folder is not None:
                    folder.files.pop(name, None)
            for r in rows:
                folder = positions.setdefault(r["session_id"], FolderPos(0, 0))
                folder.files[r["name"]] = FilePos(
                    r["kind"],
                    r["size"],
                    r["ingested"],
                    r["raw_bytes"],
                    r["records"],
                    bool(r["closed"]),
                    r["inode"] or 0,
                )
        else:
            for sid in removed:
                positions.pop(sid, None)
            for r in rows:
                folder = positions.setdefault(r["session_id"], FolderPos(0, 0))
                folder.mtime_ns, folder.listed_at_ns = r["mtime_ns"], r["listed_at_ns"]


def _segment_names(folder: str) -> set[str]:
    """The hot and sealed segment files in a session folder (FileNotFoundError if it is gone)."""
    return {n for n in list_names(folder) if HOT_RE.fullmatch(n) or SEALED_RE.fullmatch(n)}


def folder_changed(folder: str, pos: FolderPos) -> tuple[bool | None, bool]:
    """(changed, settled): changed is None when the folder is gone.

    ``settled`` says a racy listing was redone, found nothing new, and is now old enough to be
    trusted: recording the new listing time stops the folder being listed on every refresh.
    Paths are plain strings: this runs once per session on every refresh, and pathlib costs
    more than the ``stat`` calls themselves.
    """
    stat = os.stat
    try:
        st = stat(folder)
    except FileNotFoundError:
        return None, False
    settled = False
    if st.st_mtime_ns != pos.mtime_ns or pos.listed_at_ns - st.st_mtime_ns < _RACY_NS:
        listed_at = time.time_ns()
        try:
            names = _segment_names(folder)
        except FileNotFoundError:
            return None, False
        if names != pos.files.keys():
            return True, False
        if listed_at - st.st_mtime_ns >= _RACY_NS:
            pos.mtime_ns, pos.listed_at_ns = st.st_mtime_ns, listed_at
            settled = True
    for name, fp in pos.files.items():
        if fp.closed or fp.kind != "hot":
            continue  # a closed segment only ever disappears, which moves the folder's mtime
        try:
            fst = stat(folder + "/" + name)
        except FileNotFoundError:
            return True, False
        if fst.st_size != fp.size or fst.st_ino != fp.inode:
            return True, False
    return False, settled


def reseal(
    folder: str, pos: FolderPos, notes: Mapping[str, SealNote], *, grown: bool = False
) -> FolderPos | None:
    """The folder's positions after the compactions that ``notes`` describe, when they explain
    every change since ``pos``; None when anything else moved (the session is read again).
    With ``grown``, hot segments may also have grown since (a view reads those bytes next).

    A compaction's sealed file reads exactly like its inputs (compaction.py), so when every
    input is a file the catalog had read in full, the catalog's rows already show the sealed
    file's records. A note may name as input a sealed file that a later compaction replaced
    before any refresh saw it: that file's own note explains it in turn.
    """
    listed_at = time.time_ns()
    try:
        st = os.stat(folder)  # before the listing, as in folder_changed (the racy-mtime rule)
        names = _segment_names(folder)
    except FileNotFoundError:
        return None
    files = dict(pos.files)
    used: set[str] = set()

    def absorb(name: str) -> bool:
        note = notes.get(name)
        if note is None or name in used:
            return False
        used.add(name)
        if name in names:
            # The file as the compaction wrote it: not cut short or replaced since. (A flipped
            # bit of the same size passes; check() verifies every sealed file's hash.)
            fst = os.stat(f"{folder}/{name}")
            if (fst.st_size, fst.st_ino) != (note.size, note.inode):
                return False
        for input_name, f in note.inputs.items():
            held = files.get(input_name)
            if held is None and f.kind == "sealed" and absorb(input_name):
                held = files.get(input_name)
            if held is None or (held.kind, held.inode) != (f.kind, f.inode):
                return False
            if held.kind == "sealed" and held.records == 0:
                return False  # it failed verification when read: none of its records are in
            # Read in full: to its end, or to the end marker the compaction wrote to close it.
            full = (f.size, f.size - len(END_MARKER)) if f.kind == "hot" else (f.size,)
            if held.ingested not in full:
                return False
            del files[input_name]
        files[name] = FilePos(
            "sealed", note.size, note.size, note.raw_bytes, note.records, True, note.inode
        )
        return True

    try:
        for name in sorted(names - files.keys()):
            if SEALED_RE.fullmatch(name) and not absorb(name):
                return None
        for name in names - files.keys():
            # A compaction opens the next hot segment, empty, when it closes the current one.
            fst = os.stat(f"{folder}/{name}")
            if fst.st_size != 0 and not grown:
                return None
            files[name] = FilePos("hot", 0, 0, inode=fst.st_ino)
        if not used or files.keys() != names:
            return None
        for name, fp in files.items():
            if fp.kind == "hot" and not fp.closed:
                fst = os.stat(f"{folder}/{name}")
                if fst.st_ino != fp.inode or fst.st_size < fp.size:
                    return None
                if fst.st_size != fp.size and not grown:
                    return None
    except FileNotFoundError:
        return None
    return FolderPos(st.st_mtime_ns, listed_at, files)


# -- a view that remembers what it read ---------------------------------------------------------


class TrackingView(SessionView):
    """A SessionView that also records which messages new records touched, and what it read
    from each file (sizes, raw bytes, record counts) for the catalog's ``files`` table."""

    def reset(self) -> None:
        super().reset()
        self.full = True  # everything must be compared with the catalog (new or rebuilt view)
        self.dirty = True  # something was read since the last ingest
        self.touched: set[str] = set()
        self.touched_states: set[str] = set()
        self.checkpoints_touched = False
        self.synced: Fields | None = None  # the session's fields the catalog holds
        self.files: dict[str, FilePos] = {}
        self._count = 0
        self._sealed_raw: int | None = None

    @property
    def pending(self) -> bool:
        return self.full or self.dirty

    def refresh(self) -> bool:
        # Positions can move with no record read: an end marker another process wrote, the
        # empty segment it opened. The catalog's files rows must follow them too.
        before = self._files_shape()
        changed = super().refresh()
        if self._files_shape() != before:
            self.dirty = True
        return changed

    def _files_shape(self) -> tuple[object, ...]:
        return (dict(self.hot_offsets), frozenset(self.closed), frozenset(self.sealed))

    def take_notes(self, notes: Mapping[str, SealNote]) -> bool:
        """Swap the files that compactions replaced for the sealed files that replaced them,
        reading nothing (their records are the ones this view holds: see :func:`reseal`);
        False if the notes do not explain the folder's change. Appended bytes are left for
        ``refresh()``, which reads them as usual."""
        if self.pending or self._stale:
            return False
        after = reseal(str(self.folder), self.positions(), notes, grown=True)
        if after is None:
            return False
        for name in [n for n in self.hot_offsets if n not in after.files]:
            del self.hot_offsets[name]
            self.inodes.pop(name, None)
            self.closed.discard(name)
            self.files.pop(name, None)
        for name in [n for n in self.sealed if n not in after.files]:
            self.sealed.discard(name)
            self.files.pop(name, None)
        for name, fp in after.files.items():
            if fp.kind == "sealed" and name not in self.sealed:
                self.sealed.add(name)
                self.files[name] = fp
            elif fp.kind == "hot" and name not in self.hot_offsets:
                self.hot_offsets[name] = 0
                self.inodes[name] = fp.inode
        self.listed_mtime_ns, self.listed_at_ns = after.mtime_ns, after.listed_at_ns
        self.raw_bytes = sum(fp.raw_bytes for fp in self.positions().files.values())
        self.dirty = True  # the new positions are to be recorded
        return True

    def ingested(self) -> None:
        """The catalog now holds what this view shows."""
        self.full = False
        self.dirty = False
        self.touched = set()
        self.touched_states = set()
        self.checkpoints_touched = False
        self.synced = session_fields(self)

    def _read_hot(self, name: str, offset: int, size: int, inode: int) -> None:
        raw, self._count = self.raw_bytes, 0
        super()._read_hot(name, offset, size, inode)
        fp = self.files.setdefault(name, FilePos("hot", 0, 0))
        fp.size = size
        fp.ingested = self.hot_offsets[name]
        fp.raw_bytes += self.raw_bytes - raw
        fp.records += self._count
        fp.closed = name in self.closed
        fp.inode = inode

    def _read_sealed(self, name: str) -> None:
        self._count, self._sealed_raw = 0, 0
        try:
            super()._read_sealed(name)
            raw = self._sealed_raw
        finally:
            self._sealed_raw = None
        st = os.stat(self.folder / name)  # gone since: FileNotFoundError makes the view retry
        ok = name in self.sealed
        self.files[name] = FilePos(
            "sealed",
            st.st_size,
            st.st_size,
            raw if ok else 0,
            self._count if ok else 0,
            True,
            st.st_ino,
        )

    def apply(self, r: dict[str, Any]) -> None:
        self._count += 1
        self.dirty = True
        if self._sealed_raw is not None:
            self._sealed_raw += len(orjson.dumps(r)) + 1
        super().apply(r)
        kind = r.get("kind")
        if kind == "message":
            self.touched.add(str(r.get("id")))
        elif kind in ("edit", "delete"):
            self.touched.add(str(r.get("target")))
        elif kind == "state":
            self.touched_states.add(str(r.get("id")))
        elif kind in ("checkpoint", "cp_delete"):
            self.checkpoints_touched = True
        elif kind == "drop":
            self.full = True  # it may hide messages (and what they touch) read long ago

    def positions(self) -> FolderPos:
        files: dict[str, FilePos] = {}
        for name, offset in self.hot_offsets.items():
            files[name] = self.files.get(name) or FilePos(
                "hot", offset, offset, closed=name in self.closed, inode=self.inodes.get(name, 0)
            )
        for name, fp in self.files.items():
            if fp.kind == "sealed":
                files[name] = fp
        return FolderPos(self.listed_mtime_ns, self.listed_at_ns, files)


class Views:
    """The sessions whose views this process keeps, so their appends are read incrementally."""

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self._views: OrderedDict[str, TrackingView] = OrderedDict()

    def get(self, sid: str) -> TrackingView | None:
        view = self._views.get(sid)
        if view is not None:
            self._views.move_to_end(sid)
        return view

    def put(self, view: TrackingView) -> None:
        self._views[view.session_id] = view
        self._views.move_to_end(view.session_id)
        while len(self._views) > self.limit:
            self._views.popitem(last=False)

    def drop(self, sid: str) -> None:
        self._views.pop(sid, None)

    def clear(self) -> None:
        self._views.clear()

    def __len__(self) -> int:
        return len(self._views)


# -- finding changes ----------------------------------------------------------------------------


@dataclass
class Update:
    """One session to bring up to date: its view (None when its folder is gone)."""

    session_id: str
    view: TrackingView | None

    @property
    def alive(self) -> bool:
        v = self.view
        return v is not None and v.exists and v.dropped is None


@dataclass
class Collected:
    """What :func:`collect` found."""

    updates: list[Update]  # sessions to read, or gone
    settled: set[str]  # folders whose racy listing settled: their positions are worth recording
    moved: dict[str, FolderPos]  # folders only compacted, as notes explain: their new positions
    resealed: int = 0  # folders whose compaction a note explained (moved, or a held view's)


def session_names(sessions_dir: Path, known: Iterable[str] = ()) -> list[str]:
    """The session folders; names already known are taken as valid without checking again."""
    try:
        names = list_names(sessions_dir)  # a linked session folder is not read
    except FileNotFoundError:
        return []
    seen = known if isinstance(known, (set, dict)) else set(known)
    out = []
    for n in names:
        if n in seen:
            out.append(n)
            continue
        try:
            out.append(validate_session_id(n))
        except InvalidInput:
            continue  # not a session folder; check() reports it
    return out


def _same_files(a: FolderPos, b: FolderPos) -> bool:
    """Whether two positions read the same bytes of the same files."""
    if a.files.keys() != b.files.keys():
        return False
    for name, fa in a.files.items():
        fb = b.files[name]
        if (fa.kind, fa.size, fa.ingested, fa.inode) != (fb.kind, fb.size, fb.ingested, fb.inode):
            return False
    return True


def collect(
    sessions_dir: Path,
    positions: dict[str, FolderPos],
    views: Views,
    names: Iterable[str],
    *,
    everything: bool,
    notes: Mapping[str, Mapping[str, SealNote]] | None = None,
) -> Collected:
    """What changed among the folders ``names`` since the catalog last recorded them.

    With ``everything``, ``names`` is every session folder, and a folder the catalog knows
    but ``names`` lacks is reported gone.
    """
    found = Collected([], set(), {})
    updates, settled, moved = found.updates, found.settled, found.moved
    notes = notes or {}
    names = list(names)
    root = str(sessions_dir) + "/"
    for sid in names:
        folder = root + sid
        view = views.get(sid)
        held_notes = notes.get(sid)
        if view is not None and held_notes is not None and not held_notes.keys() <= view.sealed:
            if view.take_notes(held_notes):
                found.resealed += 1
            else:
                # Not explained by the notes: the positions path below may still be (the
                # view may be behind the catalog); failing that, the session is read whole.
                views.drop(sid)
                view = None
        if view is not None:
            view.refresh()
            if not os.path.isdir(folder):
                views.drop(sid)
                if sid in positions:
                    updates.append(Update(sid, None))
                continue
            if not view.pending:
                continue
            known = positions.get(sid)
            if not view.full and known is not None and _same_files(view.positions(), known):
                # Another process already ingested exactly these bytes.
                view.ingested()
                continue
            updates.append(Update(sid, view))
            continue
        pos = positions.get(sid)
        if pos is not None:
            changed, now_settled = folder_changed(folder, pos)
            if changed is None:
                updates.append(Update(sid, None))
                continue
            if not changed:
                if now_settled:
                    settled.add(sid)
                continue
            after = None if held_notes is None else reseal(folder, pos, held_notes)
            if after is not None:
                moved[sid] = after
                found.resealed += 1
                continue
        elif not os.path.isdir(folder):
            continue
        view = TrackingView(sid, sessions_dir / sid)
        view.refresh()
        views.put(view)
        updates.append(Update(sid, view))
    if everything:
        present = set(names)
        updates.extend(Update(sid, None) for sid in positions if sid not in present)
    return found


# -- rows ---------------------------------------------------------------------------------------


def _json(value: Any) -> str | None:
    return None if value is None or value == {} else encode_json(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage(metadata: dict[str, Any]) -> tuple[str | None, int | None, int | None]:
    """(model, input tokens, output tokens) from the conventions metadata carries them in:
    ``tokens: {input, output}``, or ``usage`` as OpenAI (prompt/completion_tokens) or Anthropic
    (input/output_tokens) report it."""
    model = metadata.get("model")
    model = model if isinstance(model, str) else None
    t_in = t_out = None
    tokens = metadata.get("tokens")
    if isinstance(tokens, dict):
        t_in, t_out = _int(tokens.get("input")), _int(tokens.get("output"))
    use = metadata.get("usage")
    if isinstance(use, dict):
        if t_in is None:
            t_in = _int(use.get("input_tokens", use.get("prompt_tokens")))
        if t_out is None:
            t_out = _int(use.get("output_tokens", use.get("completion_tokens")))
    return model, t_in, t_out


def message_row(m: Message, session: Fields) -> Row:
    text = m.text
    model, t_in, t_out = usage(m.metadata)
    at = m.created_at
    return {
        "_rk": None,
        "id": m.id,
        "session_id": m.session_id,
        "role": m.role,
        "text": text,
        "parts": None if isinstance(m.content, str) else encode_json(m.content),
        "metadata": _json(m.metadata),
        "created_at": at,
        "edited_at": m.edited_at,
        "day": at.date(),
        "hour": at.hour,
        "user_id": session[0],
        "org_id": session[1],
        "agent_id": session[2],
        "model": model,
        "tokens_in": t_in,
        "tokens_out": t_out,
        "chars": len(text),
    }


def session_fields(view: SessionView) -> Fields:
    return (
        view.field("user_id"),
        view.field("org_id"),
        view.field("agent_id"),
        view.field("title"),
    )


def session_row(view: TrackingView, pos: FolderPos) -> Row:
    parent = view.field("parent") or {}
    shown = view.shown()[1]
    first = shown[0].created_at if shown else None
    last = shown[-1].created_at if shown else None
    return {
        "id": view.session_id,
        "title": view.field("title"),
        "user_id": view.field("user_id"),
        "org_id": view.field("org_id"),
        "agent_id": view.field("agent_id"),
        "metadata": _json(view.field("metadata")),
        "parent_session": parent.get("session") if isinstance(parent, dict) else None,
        "parent_message": parent.get("message") if isinstance(parent, dict) else None,
        "created_at": from_us(view.first_key[0]) if view.first_key else None,
        "updated_at": from_us(view.last_us),
        "message_count": len(shown),
        "first_message_at": first,
        "last_message_at": last,
        "raw_bytes": sum(f.raw_bytes for f in pos.files.values()),
        "disk_bytes": sum(f.size for f in pos.files.values()),
    }


def position_rows(sid: str, pos: FolderPos) -> tuple[Row, list[Row]]:
    folder = {"session_id": sid, "mtime_ns": pos.mtime_ns, "listed_at_ns": pos.listed_at_ns}
    files = [
        {
            "_key": f"{sid}/{name}",
            "session_id": sid,
            "name": name,
            "kind": fp.kind,
            "size": fp.size,
            "ingested": fp.ingested,
            "raw_bytes": fp.raw_bytes,
            "records": fp.records,
            "closed": fp.closed,
            "inode": fp.inode,
        }
        for name, fp in sorted(pos.files.items())
    ]
    return folder, files


def state_row(view: SessionView, rid: str) -> Row | None:
    got = view.states.get(rid)
    if got is None:
        return None
    key, record = got
    parts = record.get("parts")
    return {
        "id": rid,
        "session_id": view.session_id,
        "created_at": from_us(key[0]),
        "keys": sorted(parts) if isinstance(parts, dict) else None,
    }


def checkpoint_rows(view: SessionView) -> dict[str, Row]:
    out = {}
    for cp in view.live_checkpoints(None):
        key = f"{view.session_id}/{cp.namespace}/{cp.checkpoint_id}"
        out[key] = {
            "_key": key,
            "session_id": view.session_id,
            "namespace": cp.namespace,
            "checkpoint_id": cp.checkpoint_id,
            "parent_id": cp.parent_id,
            "metadata": _json(cp.metadata),
            "created_at": cp.created_at,
            "record_id": cp.rid,
        }
    return out


# -- planning: the diff between the views and the catalog --------------------------------------


@dataclass
class IndexChanges:
    """What the search index must do: (re)add these messages (with their session's fields),
    drop these ids and every document of these sessions."""

    add: list[tuple[Row, Fields]] = field(default_factory=list)
    delete: set[str] = field(default_factory=set)
    delete_sessions: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.add or self.delete or self.delete_sessions)


@dataclass
class Plan:
    tables: dict[str, TableChanges]
    index: IndexChanges
    content_removed: int = 0  # message rows whose text the cache held and no longer shows
    files_gone: bool = False  # a segment the catalog had read is gone, shrank or was replaced

    def __bool__(self) -> bool:
        return bool(self.index) or any(self.tables.values())


def _edited_us(m: Message) -> int | None:
    return None if m.edited_at is None else to_us(m.edited_at)


def _select(
    catalog: Catalog, columns: str, table: str, column: str, keys: Iterable[str]
) -> list[tuple[Any, ...]]:
    """``columns`` of the live rows of ``table`` whose ``column`` is one of ``keys`` (no query
    at all for no keys: each costs about a millisecond)."""
    wanted = sorted(keys)
    if not wanted:
        return []
    with catalog.in_keys(column, wanted) as where:
        return catalog.rows(f"SELECT {columns} FROM ({catalog.live_rows(table, where)})")


def _group(rows: list[tuple[Any, ...]], sids: Iterable[str]) -> dict[str, dict[Any, Any]]:
    """{session: {key: rest}} from (session, key, *rest) rows."""
    out: dict[str, dict[Any, Any]] = {s: {} for s in sids}
    for sid, key, *rest in rows:
        out.setdefault(sid, {})[key] = rest[0] if len(rest) == 1 else tuple(rest)
    return out


def plan(
    catalog: Catalog,
    updates: list[Update],
    settled: Iterable[str] = (),
    moved: Mapping[str, FolderPos] | None = None,
) -> Plan:
    """The catalog and index changes that make ``updates`` current, and record the positions
    of folders that ``moved`` (compacted, nothing else: see :func:`reseal`).

    A view read in full (new, rebuilt, or its session gone) is compared with every row the
    catalog holds for the session. A view that only read appended bytes is compared on what
    those bytes touched, which costs one indexed lookup however long the session is.
    """
    tables = {name: TableChanges() for name in TABLES}
    result = Plan(tables, IndexChanges())
    moved = moved or {}
    index = result.index
    sids = [u.session_id for u in updates]

    # Sessions compared row by row: full views, removed sessions, and sessions whose user,
    # org, agent or title changed (those are copied into every message row and document).
    unsure = [u.session_id for u in updates if u.view is None or u.view.synced is None]
    held: dict[str, Fields] = {
        r[0]: (r[1], r[2], r[3], r[4])
        for r in _select(catalog, "id, user_id, org_id, agent_id, title", "sessions", "id", unsure)
    }
    for u in updates:
        if u.view is not None and u.view.synced is not None:
            held[u.session_id] = u.view.synced
    whole = {
        u.session_id
        for u in updates
        if not u.alive
        or u.view is None
        or u.view.full
        or session_fields(u.view) != held.get(u.session_id)
    }
    existing: dict[str, dict[str, tuple[int | None, int | None]]] = _group(
        _select(
            catalog, "session_id, id, _rk, epoch_us(edited_at)", "messages", "session_id", whole
        ),
        sids,
    )
    touched = sorted(
        {
            mid
            for u in updates
            if u.session_id not in whole and u.view is not None
            for mid in u.view.touched
        }
    )
    for sid, mid, rk, edited in _select(
        catalog, "session_id, id, _rk, epoch_us(edited_at)", "messages", "id", touched
    ):
        existing.setdefault(sid, {})[mid] = (rk, edited)
    # States, checkpoints and files rows are compared for full views only (an incremental
    # view can only add states, and add or grow files), and checkpoints when records touched.
    full_sids = sorted(whole)
    cp_sids = sorted(
        {u.session_id for u in updates if u.view is not None and u.view.checkpoints_touched} | whole
    )
    old_states = _group(_select(catalog, "session_id, id", "states", "session_id", full_sids), sids)
    old_cps = _group(
        _select(catalog, "session_id, _key, record_id", "checkpoints", "session_id", cp_sids),
        sids,
    )
    # ... and for views that dropped files (a compaction a note explained: take_notes), and
    # for folders that only moved.
    known_positions = catalog.positions or {}
    now_positions = {u.session_id: u.view.positions() for u in updates if u.view is not None}
    file_sids = set(full_sids) | set(moved)
    for sid, now_pos in now_positions.items():
        before = known_positions.get(sid)
        if before is not None and before.files.keys() - now_pos.files.keys():
            file_sids.add(sid)
    old_files = _group(
        _select(catalog, "session_id, _key", "files", "session_id", file_sids), [*sids, *moved]
    )

    msgs = tables["messages"]
    for u in updates:
        sid, view = u.session_id, u.view
        old = existing.get(sid, {})
        before = known_positions.get(sid)
        if before is not None:
            now = {} if view is None else now_positions[sid].files
            result.files_gone = result.files_gone or any(
                name not in now or now[name].size < fp.size or now[name].inode != fp.inode
                for name, fp in before.files.items()
            )
        if not u.alive:
            for mid, (rk, _) in old.items():
                msgs.removed.add(mid)
                result.content_removed += 1
                if rk is not None:
                    msgs.masks.add(rk)
            index.delete_sessions.add(sid)
            if sid in held:
                tables["sessions"].removed.add(sid)
                tables["sessions"].masks.add(sid)
            _remove_keys(tables["states"], old_states.get(sid, {}))
            _remove_keys(tables["checkpoints"], old_cps.get(sid, {}))
        else:
            assert view is not None
            fields = session_fields(view)
            force = sid in held and fields != held[sid]
            candidates = set(old) | set(view.messages) if sid in whole else set(view.touched)
            for mid in candidates:
                msg = view.shown_message(mid)
                prev = old.get(mid)
                if msg is None:
                    if prev is not None:
                        result.content_removed += 1
                        msgs.removed.add(mid)
                        if prev[0] is not None:
                            msgs.masks.add(prev[0])
                        index.delete.add(mid)
                    continue
                if prev is not None and not force and prev[1] == _edited_us(msg):
                    continue
                row = message_row(msg, fields)
                msgs.rows.append(row)
                if prev is not None:
                    result.content_removed += prev[1] != _edited_us(msg)
                    if prev[0] is not None:
                        msgs.masks.add(prev[0])
                index.add.append((row, fields))
            tables["sessions"].rows.append(session_row(view, now_positions[sid]))
            tables["sessions"].masks.add(sid)
            _diff_states(tables["states"], view, old_states.get(sid, {}), sid in whole)
            if sid in cp_sids:
                _diff_checkpoints(tables["checkpoints"], view, old_cps.get(sid, {}))
        # Positions: what was read from each file, or nothing when the folder is gone.
        files = tables["files"]
        if view is None:
            tables["folders"].removed.add(sid)
            tables["folders"].masks.add(sid)
            _remove_keys(files, old_files.get(sid, {}))
            continue
        _record_positions(tables, sid, now_positions[sid], old_files.get(sid, {}))
    if moved:
        # Compacted, and nothing else: the rows stand, the files and the storage figures move.
        result.files_gone = True
        spec = TABLES["sessions"].columns
        # Times as microseconds: DuckDB's own conversion to datetime would need pytz.
        cols = ", ".join(
            f'epoch_us("{c.name}")' if c.sql == "TIMESTAMPTZ" else f'"{c.name}"' for c in spec
        )
        for values in _select(catalog, cols, "sessions", "id", moved):
            row = {
                c.name: from_us(v) if c.sql == "TIMESTAMPTZ" and v is not None else v
                for c, v in zip(spec, values, strict=True)
            }
            files_now = moved[row["id"]].files.values()
            row["raw_bytes"] = sum(f.raw_bytes for f in files_now)
            row["disk_bytes"] = sum(f.size for f in files_now)
            tables["sessions"].rows.append(row)
            tables["sessions"].masks.add(row["id"])
        for sid, pos in moved.items():
            _record_positions(tables, sid, pos, old_files.get(sid, {}))
    done = set(sids) | set(moved)
    for sid in settled:
        pos_held = known_positions.get(sid)
        if pos_held is None or sid in done:
            continue
        folder_row, _ = position_rows(sid, pos_held)
        tables["folders"].rows.append(folder_row)
        tables["folders"].masks.add(sid)
    return result


def _record_positions(
    tables: dict[str, TableChanges], sid: str, pos: FolderPos, old_keys: Iterable[str]
) -> None:
    """The ``folders`` and ``files`` rows of a session folder read up to ``pos``."""
    folder_row, file_rows = position_rows(sid, pos)
    tables["folders"].rows.append(folder_row)
    tables["folders"].masks.add(sid)
    keys = {r["_key"] for r in file_rows}
    _remove_keys(tables["files"], [k for k in old_keys if k not in keys])
    tables["files"].rows.extend(file_rows)
    tables["files"].masks.update(keys)


def _remove_keys(change: TableChanges, keys: Iterable[str]) -> None:
    for k in keys:
        change.removed.add(k)
        change.masks.add(k)


def _diff_states(
    change: TableChanges, view: TrackingView, old: dict[str, Any], whole: bool
) -> None:
    fresh = set(view.states) - set(old) if whole else view.touched_states
    for rid in sorted(fresh):
        row = state_row(view, rid)
        if row is not None:
            change.rows.append(row)
            change.masks.add(rid)
    if whole:
        _remove_keys(change, [rid for rid in old if rid not in view.states])


def _diff_checkpoints(change: TableChanges, view: SessionView, old: dict[str, Any]) -> None:
    live = checkpoint_rows(view)
    for key, row in live.items():
        if old.get(key) != row["record_id"]:
            change.rows.append(row)
            change.masks.add(key)
    _remove_keys(change, [k for k in old if k not in live])


def all_rows(view: TrackingView) -> dict[str, list[Row]]:
    """Every row of one session, for a cold rebuild (no diff: the catalog is empty)."""
    out: dict[str, list[Row]] = {name: [] for name in TABLES}
    pos = view.positions()
    folder_row, file_rows = position_rows(view.session_id, pos)
    out["folders"].append(folder_row)
    out["files"].extend(file_rows)
    if not view.exists or view.dropped is not None:
        return out
    fields = session_fields(view)
    out["messages"] = [message_row(m, fields) for m in view.shown()[1]]
    out["sessions"].append(session_row(view, pos))
    out["states"] = [r for rid in sorted(view.states) if (r := state_row(view, rid))]
    out["checkpoints"] = list(checkpoint_rows(view).values())
    return out
