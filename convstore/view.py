"""The current view of one session, materialised from its files and kept up to date cheaply.

Replaying records is order-independent: every decision compares the records' own keys
``(created_at, id)``, never the order in which files happen to be read. That is what lets
several writers' segments, sealed copies and git merges be read in any order and agree.

Rules (docs/FORMAT.md, "How a reader finds the truth"):

- records are de-duplicated by id;
- a message's content is that of its newest version: the message itself, or an ``edit``
  (a sealed message that folded an edit in carries ``edit_id``/``edited_at``);
- a ``delete`` removes its target for good; a ``drop`` hides the session and every record
  older than itself (records written after it, by a clone that had not seen it, stay);
- session fields are last-writer-wins per field;
- a ``cp_delete`` removes the checkpoints (of its namespace) older than itself.

Refreshing costs one ``stat`` of the folder and one per hot segment when nothing changed;
appended bytes are read from where the last refresh stopped.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from . import frames
from .errors import ConvstoreError, CorruptData, InvalidDate
from .ids import from_us, parse_us
from .layout import HOT_RE, SEALED_RE, list_names, open_read, owner
from .records import Message, make_message, new_message, record_problem
from .sealed import read_sealed

Key = tuple[int, str]
# Records that a clone writes to a session it holds as live. One written after the session's
# newest drop (by a clone that had not seen the drop yet) brings the session back, showing
# what was written after the drop: acknowledged writes are never lost to a delete made
# elsewhere (FORMAT.md, section 5, rule 5). Tombstones (delete, cp_delete) do not.
REVIVING = frozenset(("message", "session", "state", "checkpoint", "cp_writes"))
_STATE_KINDS = frozenset(("state", "checkpoint", "cp_writes"))


def drop_cover(r: dict[str, Any]) -> str:
    """The newest record id a ``drop`` covers: its own id, or the newest record its writer had
    seen (``covers``) when that is newer. Ids of imported records carry their original time,
    which may lie in the future: the drop must still cover what its writer deleted."""
    rid: str = r["id"]
    covers = r.get("covers")
    return covers if isinstance(covers, str) and covers > rid else rid


# Session fields that stay with a session through a drop: who it belongs to. Title, metadata
# and parent of a session written before the drop do not come back with it.
KEPT_THROUGH_DROP = ("user_id", "org_id", "agent_id")
# A folder mtime this close to the moment we listed it may hide a later change in the same
# clock tick (the "racy git" problem); such a listing is redone on the next refresh.
_RACY_NS = 2_000_000_000
_VANISH_RETRIES = 20
# Full re-reads before a view stops starting over and absorbs what changed (_absorb).
_REBUILD_TRIES = 5


@dataclass
class Problem:
    """Something wrong found while reading a file."""

    path: str
    offset: int
    end: int
    reason: str
    torn: bool = False


@dataclass
class Checkpoint:
    """A checkpoint as stored: its state is resolved from blobs on demand."""

    checkpoint_id: str
    namespace: str
    parent_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    rid: str  # id of the record: newer records of the same checkpoint replace older ones
    record: dict[str, Any] = field(repr=False)


class SessionView:
    """All that is known of one session, from every file in its folder."""

    def __init__(self, session_id: str, folder: Path, writer: str | None = None) -> None:
        self.session_id = session_id
        self.folder = folder
        # This clone's writer id: blobs in files it owns are the only ones a writer may
        # refer to without writing them again (``own_blobs``).
        self.writer = writer
        self._foreign = False
        self._dir = os.fspath(folder)  # a str: every write refreshes, and Paths cost there
        self.reset()

    def reset(self) -> None:
        self.hot_offsets: dict[str, int] = {}
        # Segments that ended with an end marker never change again: refresh skips their stat,
        # so a session with many rolled segments refreshes as cheaply as one with a single one.
        self.closed: set[str] = set()
        self.inodes: dict[str, int] = {}
        self.sealed: set[str] = set()
        self.bad_sealed: set[str] = set()
        self._stale = False
        self._new_sealed = False
        self.listed_mtime_ns = -1
        self.listed_at_ns = 0
        self.version = 0  # bumps whenever anything visible may have changed
        self.messages: dict[str, Message] = {}
        self.msg_version: dict[str, str] = {}
        self.order_keys: list[Key] = []
        self.order: list[Message] = []
        # Edits read before their message: target -> (edit id, edit time, content).
        self.pending_edits: dict[str, tuple[str, int, Any]] = {}
        self.deleted: set[str] = set()
        self.deleted_keys: dict[str, Key] = {}
        self.meta: dict[str, tuple[str, Any]] = {}
        self.first_key: Key | None = None
        self.last_us = 0
        self.drop_id: str | None = None  # the newest drop
        self.newest_live = ""  # the newest record of a kind that brings a session back
        self.newest_id = ""  # the newest record of any kind: what a drop written now covers
        self.blobs: dict[str, bytes] = {}
        self.own_blobs: set[str] = set()  # held in files of this clone's own (or written here)
        self.states: dict[str, tuple[Key, dict[str, Any]]] = {}
        self.checkpoints: dict[tuple[str, str], Checkpoint] = {}
        self.cp_delete_all: dict[str, str] = {}  # namespace -> newest delete-all record id
        self.cp_delete_one: dict[tuple[str, str], str] = {}  # (ns, checkpoint) -> delete id
        self._live_cache: dict[str | None, tuple[int, list[Checkpoint]]] = {}
        self.writes: dict[tuple[str, str], dict[str, tuple[Key, dict[str, Any]]]] = {}
        self.seen_ids: set[str] = set()
        self.problems: list[Problem] = []
        self.raw_bytes = 0

    # -- refreshing ----------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.first_key is not None

    @property
    def dropped(self) -> str | None:
        """The newest drop, while it hides the session: nothing was written after it."""
        d = self.drop_id
        return d if d is not None and self.newest_live <= d else None

    @property
    def revived_after(self) -> str | None:
        """The newest drop of a session that was written to after it (by a clone that had not
        seen the drop): what is older than that drop stays hidden. None otherwise."""
        d = self.drop_id
        return d if d is not None and self.newest_live > d else None

    def shown(self) -> tuple[list[Key], list[Message]]:
        """The session's own messages as readers see them: (order keys, messages). The view
        keeps messages older than a drop (branches still inherit them); a revived session
        shows only those written after the drop."""
        after = self.revived_after
        if after is None:
            return self.order_keys, self.order
        pairs = [(k, m) for k, m in zip(self.order_keys, self.order, strict=True) if m.id > after]
        return [k for k, _ in pairs], [m for _, m in pairs]

    def shown_message(self, mid: str) -> Message | None:
        """A message of the session's own, if readers see it."""
        msg = self.messages.get(mid)
        after = self.revived_after
        if msg is None or (after is not None and mid < after):
            return None
        return msg

    def field(self, name: str, default: Any = None) -> Any:
        """A session field as readers see it: a revived session keeps only who it belongs to
        (``KEPT_THROUGH_DROP``) from what was written before its drop."""
        got = self.meta.get(name)
        if got is None:
            return default
        after = self.revived_after
        if after is not None and got[0] < after and name not in KEPT_THROUGH_DROP:
            return default
        return got[1]

    def refresh(self) -> bool:
        """Bring the view up to date with the files; True if anything changed.

        Another process may compact or prune this session while we read it: a file we were
        about to read can vanish. Its records are then in a new sealed file, so the answer is
        to list the folder again and re-read, a few times at most.
        """
        for attempt in range(_VANISH_RETRIES):
            try:
                if self._stale and attempt >= _REBUILD_TRIES:
                    return self._absorb()
                if self._stale:
                    return self._rebuild()
                return self._refresh_once()
            except FileNotFoundError:
                self._stale = True
                # Backing off lets a compaction that keeps replacing files finish a step:
                # 1, 2, 4 ... 64 ms, then 100 ms: about 1.4 s before giving up.
                time.sleep(min(0.001 * 2**attempt, 0.1))
        raise ConvstoreError(
            f"session folder {self.folder} kept changing while it was read "
            f"({_VANISH_RETRIES} tries); try again"
        )

    def _refresh_once(self) -> bool:
        try:
            st = os.stat(self._dir)
        except FileNotFoundError:
            if self.hot_offsets or self.sealed:
                self._stale = True
                return self._rebuild()
            return False
        changed = False
        racy = self.listed_at_ns - st.st_mtime_ns < _RACY_NS
        relist = st.st_mtime_ns != self.listed_mtime_ns or racy
        if relist and self._relist(st.st_mtime_ns):
            return self._rebuild()
        for name, offset in list(self.hot_offsets.items()):
            if name in self.closed:
                continue
            fst = os.stat(f"{self._dir}/{name}")
            if fst.st_size < offset or fst.st_ino != self.inodes.get(name, fst.st_ino):
                return self._rebuild()  # replaced underneath us: read everything again
            if fst.st_size > offset:
                self._read_hot(name, offset, fst.st_size, fst.st_ino)
                changed = True
        if changed or self._new_sealed:
            self._new_sealed = False
            self.version += 1
            return True
        return False

    def _list(self, mtime_ns: int) -> tuple[list[str], set[str]]:
        """The folder's hot segments (sorted) and sealed files, noting when it was listed."""
        self.listed_at_ns = time.time_ns()
        self.listed_mtime_ns = mtime_ns
        try:
            names = list_names(self.folder)  # links are never read; check() reports them
        except FileNotFoundError:
            names = []
        hot = sorted(n for n in names if HOT_RE.fullmatch(n))
        return hot, {n for n in names if SEALED_RE.fullmatch(n)}

    def _read_new_sealed(self, sealed: set[str]) -> None:
        for name in sorted(sealed - self.sealed - self.bad_sealed):
            self._read_sealed(name)
            self._new_sealed = True

    def _relist(self, mtime_ns: int) -> bool:
        """Take in the folder's current files; True if the view must be rebuilt."""
        hot, sealed = self._list(mtime_ns)
        if (set(self.hot_offsets) - set(hot)) or (self.sealed - sealed):
            return True  # sealed, pruned or pulled away: records may have gone
        for name in self.inodes:  # same name, other file (a restore, a checkout): re-read
            if os.stat(self.folder / name).st_ino != self.inodes[name]:
                return True
        self._read_new_sealed(sealed)
        for name in hot:
            if name not in self.hot_offsets:
                # The inode is taken now, not when bytes are first read: a segment may stay
                # empty (compaction and rolls open the next one at once), and the inode is what
                # tells a later look (this view's, or the catalog's recorded position) that the
                # name still holds the same file. Gone since the listing: FileNotFoundError,
                # and refresh() starts over, as for any file that vanishes mid-read.
                self.inodes[name] = os.stat(self.folder / name).st_ino
                self.hot_offsets[name] = 0
        return False

    def _rebuild(self) -> bool:
        version = self.version
        self.reset()
        self.version = version + 1
        self._stale = True  # until every file has been read
        try:
            st = os.stat(self.folder)
        except FileNotFoundError:
            self._stale = False
            return True
        self._relist(st.st_mtime_ns)
        for name in list(self.hot_offsets):
            fst = os.stat(self.folder / name)
            self._read_hot(name, 0, fst.st_size, fst.st_ino)
        self._stale = False
        self._new_sealed = False
        return True

    def _absorb(self) -> bool:
        """Catch up with a folder that keeps changing faster than a rebuild can read it.

        A rebuild starts over whenever a file vanishes under it; a process that compacts
        every few appends can make every start over lose the race again. Here nothing read is
        dropped: files that vanished are forgotten, new ones read, and what is kept plus what
        is new is the current view, because compaction and prune remove a record only when a
        record that stays justifies it (COMPACTION.md, "What is purged"). Each try reads only
        what is new, so the tries converge.
        """
        self._stale = True
        hot, sealed = self._list(os.stat(self.folder).st_mtime_ns)
        for name in set(self.hot_offsets) - set(hot):
            del self.hot_offsets[name]
            self.inodes.pop(name, None)
            self.closed.discard(name)
        self.sealed &= sealed
        self._read_new_sealed(sealed)
        for name in hot:
            fst = os.stat(self.folder / name)
            offset = self.hot_offsets.get(name)
            if offset is None or fst.st_ino != self.inodes.get(name):
                offset = 0  # new, or another file under the same name
            if name not in self.closed and (name not in self.hot_offsets or fst.st_size > offset):
                self._read_hot(name, offset, fst.st_size, fst.st_ino)
        self._stale = False
        self._new_sealed = False
        self.version += 1
        return True

    def _read_hot(self, name: str, offset: int, size: int, inode: int) -> None:
        path = self.folder / name
        with open_read(path) as fh:
            if os.fstat(fh.fileno()).st_ino != inode:
                raise FileNotFoundError(path)  # replaced between stat and open: start over
            fh.seek(offset)
            data = fh.read(size - offset)
        self.inodes[name] = inode
        result = frames.scan(data, offset)
        for dmg in result.damage:
            if not dmg.torn:
                self.problems.append(Problem(str(path), dmg.offset, dmg.end, dmg.reason))
        for start, end, payload in result.frames:
            self.raw_bytes += len(payload)
            try:
                records = frames.decode_records(payload)
            except ValueError as e:
                self.problems.append(Problem(str(path), start, end, f"bad JSON: {e}"))
                continue
            self._apply_file(name, records)
        # A torn tail may be an append still in flight: stop before it, look again next time.
        self.hot_offsets[name] = result.valid_end
        if result.closed:
            self.closed.add(name)

    def _read_sealed(self, name: str) -> None:
        path = self.folder / name
        try:
            records = read_sealed(path, verify=True)
        except CorruptData as e:
            if not path.exists():
                raise FileNotFoundError(path) from None
            self.problems.append(Problem(str(path), 0, 0, str(e)))
            self.bad_sealed.add(name)  # reported once; check() says what to do
            return
        self.sealed.add(name)
        self._apply_file(name, records)

    def _apply_file(self, name: str, records: list[dict[str, Any]]) -> None:
        """Replay records read from file ``name``, noting whether another clone owns it (its
        blobs are not ours to refer to: ``own_blobs``)."""
        self._foreign = owner(name) != self.writer
        try:
            for record in records:
                self.apply(record)
        finally:
            self._foreign = False

    # -- replaying records ---------------------------------------------------------------------

    def apply(self, r: dict[str, Any]) -> None:
        """Replay one record read from the files."""
        problem = record_problem(r, self.session_id, deep=False)
        if problem is not None:
            self.problems.append(Problem(str(self.folder), 0, 0, f"skipped a record: {problem}"))
            return
        kind = r["kind"]
        rid = r["id"]
        try:
            key: Key = (parse_us(r["created_at"]), rid)
            if kind == "message" and "edit_id" in r:
                parse_us(r["edited_at"])
        except InvalidDate as e:
            self.problems.append(Problem(str(self.folder), 0, 0, f"skipped a record: {e}"))
            return
        if kind != "message" and kind != "blob":
            # Messages may legitimately arrive twice (a sealed copy folding an edit); they are
            # merged by version below. Everything else is settled by the id alone.
            if rid in self.seen_ids:
                return
            self.seen_ids.add(rid)
        self._note_key(key)
        if rid > self.newest_id:
            self.newest_id = rid
        if kind in REVIVING and rid > self.newest_live:
            self.newest_live = rid
        # "Newest wins" rules compare record ids, which sort by the time the record was
        # written; created_at may be a caller's date (an import, a replay) and must not let an
        # old edit beat a new one.
        if kind == "message":
            self._apply_message(r, key)
        elif kind == "edit":
            self._apply_edit(r, key)
        elif kind == "delete":
            self._apply_delete(r["target"])
        elif kind == "session":
            for name in ("title", "user_id", "org_id", "agent_id", "metadata", "parent"):
                if name in r:
                    old = self.meta.get(name)
                    if old is None or old[0] < rid:
                        self.meta[name] = (rid, r[name])
        elif kind == "drop":
            cover = drop_cover(r)
            if self.drop_id is None or cover > self.drop_id:
                self.drop_id = cover
                self._forget_state_before(cover)
        elif kind == "blob":
            if r["hash"] not in self.blobs:
                self.blobs[r["hash"]] = orjson.dumps(r["data"])
            if not self._foreign:
                self.own_blobs.add(r["hash"])
        elif self.drop_id is not None and rid <= self.drop_id and kind in _STATE_KINDS:
            return  # agent state a drop covers: never inherited, never shown again
        elif kind == "state":
            self.states[rid] = (key, r)
        elif kind == "checkpoint":
            ns = r.get("namespace", "")
            cp_key = (ns, r["checkpoint_id"])
            old_cp = self.checkpoints.get(cp_key)
            if old_cp is None or old_cp.rid < rid:
                self.checkpoints[cp_key] = Checkpoint(
                    r["checkpoint_id"],
                    ns,
                    r.get("parent_id"),
                    r.get("metadata") or {},
                    from_us(key[0]),
                    rid,
                    r,
                )
        elif kind == "cp_delete":
            ns = r.get("namespace", "")
            ids = r.get("checkpoint_ids")
            if ids is None:
                self.cp_delete_all[ns] = max(self.cp_delete_all.get(ns, ""), rid)
            else:
                for cp_id in ids:
                    old_d = self.cp_delete_one.get((ns, cp_id), "")
                    self.cp_delete_one[(ns, cp_id)] = max(old_d, rid)
        elif kind == "cp_writes":
            w_key = (r.get("namespace", ""), r["checkpoint_id"])
            per_task = self.writes.setdefault(w_key, {})
            task = f"{r['task_id']}\x00{r.get('task_path', '')}"
            old_w = per_task.get(task)
            if old_w is None or old_w[0][1] < rid:
                per_task[task] = (key, r)

    def _forget_state_before(self, cover: str) -> None:
        """Agent state, checkpoints and their writes that a drop covers. (Messages stay in the
        view: branches still inherit them; ``shown()`` leaves them out.)"""
        self.states = {rid: v for rid, v in self.states.items() if rid > cover}
        self.checkpoints = {k: cp for k, cp in self.checkpoints.items() if cp.rid > cover}
        for w_key in list(self.writes):
            kept = {t: v for t, v in self.writes[w_key].items() if v[0][1] > cover}
            if kept:
                self.writes[w_key] = kept
            else:
                del self.writes[w_key]
        self._live_cache.clear()

    def _note_key(self, key: Key) -> None:
        """The session's first record and latest activity, as records arrive."""
        if self.first_key is None or key < self.first_key:
            self.first_key = key
        if key[0] > self.last_us:
            self.last_us = key[0]

    def add_new_message(
        self, mid: str, at_us: int, fields: dict[str, Any], when: datetime | None
    ) -> Message:
        """Put a message this process has just written, with a fresh id, after checking it
        (``Store._write``): it skips the checks and the merging a record read from disk gets,
        since a fresh id cannot be deleted, edited or here already."""
        key = (at_us, mid)
        self._note_key(key)
        self.newest_id = max(self.newest_id, mid)
        msg = new_message(mid, self.session_id, fields, at_us, when)
        self._put(msg, key, "")
        return msg

    def add_new_messages(
        self, batch: Sequence[tuple[str, int, dict[str, Any], datetime | None]]
    ) -> list[Message]:
        """``add_new_message`` for a batch of (id, time, fields, when): an ``extend``. Its
        messages usually come in time order after everything the view holds, and then go in
        with one extend of each list instead of an insert each."""
        sid = self.session_id
        msgs = [new_message(mid, sid, f, at, when) for mid, at, f, when in batch]
        keys = [(at, mid) for mid, at, _, _ in batch]
        if not keys:
            return msgs
        self._note_key(min(keys))
        self._note_key(max(keys))
        self.newest_id = max(self.newest_id, *(k[1] for k in keys))
        order_keys = self.order_keys
        if (not order_keys or order_keys[-1] < keys[0]) and keys == sorted(keys):
            order_keys.extend(keys)
            self.order.extend(msgs)
            mids = [k[1] for k in keys]
            self.messages.update(zip(mids, msgs, strict=True))
            self.msg_version.update(dict.fromkeys(mids, ""))
        else:
            for key, msg in zip(keys, msgs, strict=True):
                self._put(msg, key, "")
        return msgs

    def _apply_message(self, r: dict[str, Any], key: Key) -> None:
        mid = r["id"]
        if mid in self.deleted:
            return
        # A message's version is "" (the original) or the id of the edit folded into it.
        version: str = r.get("edit_id", "")
        edited = parse_us(r["edited_at"]) if version else None
        if edited is not None and edited > self.last_us:
            self.last_us = edited  # a folded edit was activity, though its record is gone
        pending = self.pending_edits.pop(mid, None)
        old_version = self.msg_version.get(mid)
        if old_version is not None and old_version >= version and pending is None:
            return  # a copy we already have, or an older version of it
        msg = make_message(
            mid,
            self.session_id,
            r["role"],
            r["content"],
            r.get("metadata") or {},
            from_us(key[0]),
            None if edited is None else from_us(edited),
        )
        if old_version is not None and old_version > version:
            old = self.messages[mid]
            msg = _revised(msg, old.content, old.edited_at)
            version = old_version
        if pending is not None and pending[0] > version:
            msg = _revised(msg, pending[2], from_us(pending[1]))
            version = pending[0]
        self._put(msg, key, version)

    def _apply_edit(self, r: dict[str, Any], key: Key) -> None:
        target = r["target"]
        if target in self.deleted:
            return
        rid = r["id"]
        current = self.messages.get(target)
        if current is None:
            pending = self.pending_edits.get(target)
            if pending is None or pending[0] < rid:
                self.pending_edits[target] = (rid, key[0], r["content"])
            return
        if self.msg_version[target] < rid:
            msg = _revised(current, r["content"], from_us(key[0]))
            self._put(msg, _order_key(current), rid)

    def _apply_delete(self, target: str) -> None:
        self.deleted.add(target)
        self.pending_edits.pop(target, None)
        msg = self.messages.pop(target, None)
        if msg is not None:
            del self.msg_version[target]
            k = _order_key(msg)
            # A reader may hold the deleted message as its paging cursor: keep its place.
            self.deleted_keys[target] = k
            i = bisect.bisect_left(self.order_keys, k)
            del self.order_keys[i]
            del self.order[i]

    def _put(self, msg: Message, key: Key, version: str) -> None:
        mid = msg.id
        if mid in self.messages:
            i = bisect.bisect_left(self.order_keys, key)
            self.order[i] = msg
        elif not self.order_keys or self.order_keys[-1] < key:
            self.order_keys.append(key)
            self.order.append(msg)
        else:
            i = bisect.bisect_left(self.order_keys, key)
            self.order_keys.insert(i, key)
            self.order.insert(i, msg)
        self.messages[mid] = msg
        self.msg_version[mid] = version

    # -- reading the view ----------------------------------------------------------------------

    def lineage_field(self, name: str, default: Any = None) -> Any:
        """A session field as its records say, drops aside: what branches of a deleted
        session follow to the history they inherit."""
        got = self.meta.get(name)
        return default if got is None else got[1]

    def resolve(self, record: dict[str, Any]) -> Any:
        """The JSON value of a state or checkpoint record, rebuilt from its blobs.

        Blobs are kept encoded and decoded on every call, so a caller that mutates what it
        got back (the usual load, modify, save loop of an agent) never changes the cache.
        """
        try:
            if "parts" in record:
                return {k: orjson.loads(self.blobs[h]) for k, h in record["parts"].items()}
            return orjson.loads(self.blobs[record["value"]])
        except KeyError as e:
            raise CorruptData(
                f"session {self.session_id!r}: blob {e} of record {record.get('id')} is missing; "
                "run check() and restore the segment that held it"
            ) from None

    def live_checkpoints(self, namespace: str | None) -> list[Checkpoint]:
        """Checkpoints not deleted, newest first (cached until the view changes)."""
        cached = self._live_cache.get(namespace)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        out = []
        for (ns, cp_id), cp in self.checkpoints.items():
            if namespace is not None and ns != namespace:
                continue
            deleted_at = max(
                self.cp_delete_all.get(ns, ""), self.cp_delete_one.get((ns, cp_id), "")
            )
            if deleted_at > cp.rid:
                continue
            out.append(cp)
        out.sort(key=lambda c: c.rid, reverse=True)
        self._live_cache[namespace] = (self.version, out)
        return out


def _order_key(msg: Message) -> Key:
    from .ids import to_us

    return (to_us(msg.created_at), msg.id)


def _revised(msg: Message, content: Any, edited_at: datetime | None) -> Message:
    return make_message(
        msg.id, msg.session_id, msg.role, content, msg.metadata, msg.created_at, edited_at
    )
