"""Compaction: seal hot segments into content-named Parquet, purge what was replaced, merge.

For each session, holding the clone's compaction lock (``.cache/locks/compaction.lock``):

1. Under the session lock, only long enough to write an end marker, this clone's current hot
   segment is closed (``Appender.close_segment``). Appends from any process move on to the next
   sequence number; they never wait for the rest of the compaction.
2. Without the lock, the session's files are read. Sealable input: the files this clone owns
   (its closed hot segments and its own sealed files). Context: everything else (other clones'
   segments and sealed files, format 1's sealed files, our own current segment). Context
   records only inform decisions; those files are never rewritten or deleted here: a file is
   only ever removed by its owner, which is what keeps git merges free of conflicts.
3. The sealable records are purged (:func:`purge`): deleted messages and their edits go, the
   newest edit is folded into its message, checkpoints removed by a ``cp_delete`` go, duplicate
   blobs go; a dropped session keeps only its bare ``session`` and ``drop`` records, and the
   messages a live branch still inherits.
4. What is left is written as ONE sealed file (``sealed.write_sealed``: temporary file, fsync,
   rename, directory fsync).
5. Only then, under the session lock again, are the inputs deleted: our closed hot segments and
   our older sealed files.

Why a reader never sees a partial state: between 4 and 5 both the new file and its inputs exist;
readers de-duplicate by id and take the newest version of a message, so the overlap reads exactly
like the inputs alone. Deleting an input makes a reader re-read the session, and what it then
finds is the new file plus the inputs still there: again the same view. A SIGKILL at any point
leaves one of these states, or a ``.sealing.*.tmp`` that readers ignore and ``check(repair=True)``
removes. A whole-store run compacts several sessions at once, in threads. docs/COMPACTION.md is
the written contract.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock
import orjson
import zstandard

from . import frames, layout
from .errors import ConvstoreError, CorruptData, InvalidInput, LockTimeout, SessionNotFound
from .ids import parse_us, to_us, validate_session_id
from .locks import store_lock
from .records import record_problem
from .sealed import read_sealed, write_sealed
from .sealnotes import InputFile, SealNote, write_notes
from .view import KEPT_THROUGH_DROP, drop_cover
from .wording import plural

if TYPE_CHECKING:
    from .segments import Appender
    from .store import Store

__all__ = [
    "LOCK_NAME",
    "CompactReport",
    "SessionCompaction",
    "compact",
    "compaction_lock",
    "on_segment_rolled",
    "purge",
    "wait_for_background",
]

log = logging.getLogger("convstore.compaction")

Record = dict[str, Any]
Key = tuple[int, str]

LOCK_NAME = "compaction"
"""The store-wide lock held while a session is compacted, and by ``convstore sync`` while it
stages and merges (so that git never records half of a compaction)."""

LOCK_TIMEOUT = 120.0

# A whole-store compaction runs this many sessions at once, and takes the lock per batch.
_THREADS = 4
_BATCH = 64

# What is left of a dropped session's `session` records: who it belongs to (so that a session
# revived by a clone that had not seen the drop stays in its user's and org's scope), no
# title, no metadata. `parent` stays while a live branch inherits through the session, since
# its history depends on it.
_BARE_FIELDS = ("id", "kind", "session", "created_at", *KEPT_THROUGH_DROP)


# -- reports ---------------------------------------------------------------------------------


@dataclass
class SessionCompaction:
    """What compaction did to one session."""

    session_id: str
    sealed: str | None = None  # name of the sealed file written, if any
    files_in: int = 0  # files replaced (closed hot segments and older sealed files)
    records_in: int = 0
    records_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    messages_purged: int = 0  # deleted messages whose bytes are now gone
    edits_folded: int = 0  # edit records merged into their message (older content gone)
    records_purged: int = 0  # every other record dropped (duplicates, states of a dropped session)
    skipped: str | None = None  # why nothing was done
    # What the sealed file replaced, for this clone's catalog (sealnotes.py); not reported.
    note: SealNote | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "sealed": self.sealed,
            "files_in": self.files_in,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "messages_purged": self.messages_purged,
            "edits_folded": self.edits_folded,
            "records_purged": self.records_purged,
            "skipped": self.skipped,
        }


@dataclass
class CompactReport:
    """What ``compact()`` did, per session and in total."""

    sessions: list[SessionCompaction] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def compacted(self) -> list[SessionCompaction]:
        """The sessions whose files were rewritten."""
        return [s for s in self.sessions if s.skipped is None]

    @property
    def problems(self) -> list[SessionCompaction]:
        """Sessions left alone because a file could not be read (see ``check()``)."""
        return [s for s in self.sessions if s.skipped and s.skipped.startswith("not compacted")]

    @property
    def bytes_in(self) -> int:
        return sum(s.bytes_in for s in self.compacted)

    @property
    def bytes_out(self) -> int:
        return sum(s.bytes_out for s in self.compacted)

    @property
    def messages_purged(self) -> int:
        return sum(s.messages_purged for s in self.sessions)

    @property
    def edits_folded(self) -> int:
        return sum(s.edits_folded for s in self.sessions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions_seen": len(self.sessions),
            "sessions_compacted": len(self.compacted),
            "files_in": sum(s.files_in for s in self.compacted),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "messages_purged": self.messages_purged,
            "edits_folded": self.edits_folded,
            "seconds": round(self.seconds, 3),
            "problems": [s.to_dict() for s in self.problems],
            "sessions": [s.to_dict() for s in self.compacted],
        }

    def __str__(self) -> str:
        done = self.compacted
        line = (
            f"compacted {len(done)} of {plural(len(self.sessions), 'session')}: "
            f"{plural(sum(s.files_in for s in done), 'file')}, "
            f"{self.bytes_in:,} -> {self.bytes_out:,} bytes; "
            f"purged {self.messages_purged} deleted messages, "
            f"folded {self.edits_folded} edits ({self.seconds:.2f} s)"
        )
        return "\n".join([line] + [f"  {s.session_id}: {s.skipped}" for s in self.problems])


# -- the entry point -------------------------------------------------------------------------


def compact(
    store: Store,
    session_id: str | None = None,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
) -> CompactReport:
    """Compact one session, or every session of the store (``session_id=None``).

    Deleted sessions are compacted too (that is how their bytes go). A session whose files
    cannot be read or written is left as it is and listed in ``report.problems``. Raises
    SessionNotFound for an explicit id without a folder, LockTimeout when another compaction or
    ``convstore sync`` holds the store's compaction lock for longer than ``lock_timeout``.
    """
    started = time.perf_counter()
    store._migrated()
    if session_id is None:
        ids = store.session_ids()
    else:
        sid = validate_session_id(session_id)
        if not store._session_folder(sid).is_dir():
            raise SessionNotFound(
                f"no session {sid!r} in {store.path}; list them with `convstore ls`"
            )
        ids = [sid]
    valid = []
    for sid in ids:
        try:
            valid.append(validate_session_id(sid))
        except InvalidInput:
            continue  # check() reports stray folders; compaction leaves them alone
    lineage = _Lineage(store)
    report = CompactReport()
    # Sessions are independent, and most of a session's time goes to fsync and to pyarrow,
    # which release the GIL: a few threads keep both the disk and the cores busy (measured:
    # about 1.6 cores of 2; worker processes did no better). The lock is taken per batch, so
    # that `convstore sync` or a background compaction elsewhere can slip in between batches.
    with ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="convstore-compact") as pool:
        for i in range(0, len(valid), _BATCH):
            with compaction_lock(store, lock_timeout):
                batch = valid[i : i + _BATCH]
                done = list(pool.map(lambda sid: _compact_guarded(store, sid, lineage), batch))
                _leave_notes(store, done)
                report.sessions.extend(done)
    report.seconds = time.perf_counter() - started
    return report


def _compact_guarded(store: Store, sid: str, lineage: _Lineage) -> SessionCompaction:
    """One session; an error of the file system or of convstore becomes a reported problem,
    so that one bad session never stops a whole-store compaction."""
    try:
        return _compact_session(store, sid, lineage)
    except (OSError, ConvstoreError) as e:
        return SessionCompaction(sid, skipped=f"not compacted: {e}")
    except Exception as e:  # a defect, but still one session's: the others go on
        log.exception("compaction of session %r failed", sid)
        return SessionCompaction(
            sid, skipped=f"not compacted: {type(e).__name__}: {e}; run `convstore check`"
        )


def compaction_lock(store: Store, timeout: float = LOCK_TIMEOUT) -> _HeldLock:
    """The store's compaction lock, as a context manager that raises LockTimeout."""
    return _HeldLock(store_lock(store.path, LOCK_NAME, timeout=timeout), store.path)


class _HeldLock:
    def __init__(self, lock: filelock.BaseFileLock, root: Path) -> None:
        self.lock = lock
        self.root = root

    def __enter__(self) -> _HeldLock:
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise LockTimeout(
                f"another compaction or `convstore sync` has held {self.lock.lock_file} for "
                f"over {self.lock.timeout:.0f}s in {self.root}; retry when it has finished"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


# -- one session -----------------------------------------------------------------------------


@dataclass
class _Inputs:
    sealable: list[Record] = field(default_factory=list)
    context: list[Record] = field(default_factory=list)
    hot: list[Path] = field(default_factory=list)  # closed hot segments, deleted at the end
    sealed: list[Path] = field(default_factory=list)  # sealed files, deleted at the end
    files: dict[str, InputFile] = field(default_factory=dict)  # hot and sealed, for the note
    other_hot: int = 0  # hot segments read as context only
    problem: str | None = None


def _compact_session(store: Store, sid: str, lineage: _Lineage) -> SessionCompaction:
    result = SessionCompaction(sid)
    folder = store._session_folder(sid)
    writer = store.writer_id
    try:
        names = layout.list_names(folder)
    except (FileNotFoundError, NotADirectoryError):
        result.skipped = "no folder"
        return result
    if any(layout.owner(n) == writer for n in names):
        # One of the two short steps under the session lock: an end marker, an fdatasync and a
        # new empty segment. Appenders in other processes see the size change under the same
        # lock and move on to the next sequence number.
        with store._locks.get(sid):
            appender = store._appender(sid)
            _forget_removed_segment(appender)
            appender.close_segment()
        names = layout.list_names(folder)
    inputs = _read_inputs(folder, names, writer)
    if inputs.problem is not None:
        result.skipped = f"not compacted: {inputs.problem}; run `convstore check`"
        return result
    if not inputs.hot and (not inputs.sealed or (len(inputs.sealed) == 1 and not inputs.context)):
        result.skipped = "nothing to do"
        return result
    needed = lineage.needed_until(sid) if _is_dropped(inputs) else None
    out, stats = purge(inputs.sealable, inputs.context, keep_messages_until=needed)
    if not inputs.hot and len(inputs.sealed) == 1 and not stats.changed:
        result.skipped = "nothing to do"
        return result
    result.files_in = len(inputs.hot) + len(inputs.sealed)
    result.records_in = len(inputs.sealable)
    result.records_out = len(out)
    result.bytes_in = sum(_file_size(p) for p in (*inputs.hot, *inputs.sealed))
    result.messages_purged = stats.messages_purged
    result.edits_folded = stats.edits_folded
    result.records_purged = stats.records_purged
    keep: Path | None = None
    if out:
        keep = write_sealed(folder, out, writer)
        result.sealed = keep.name
        result.bytes_out = _file_size(keep)
        result.note = _note(sid, keep, inputs.sealable, out, inputs.files)
    # The new file is durable (write_sealed fsynced it and the folder) before any input goes,
    # so a crash from here on leaves duplicates that readers de-duplicate, never a loss.
    # The unlinks happen under the session lock because an appender of this clone that still
    # holds a sealed segment open re-reads it by name while catching up, under that lock.
    # No directory fsync after the unlinks: if a power loss undoes some of them, the files
    # come back as duplicates of what the sealed file holds, which readers de-duplicate.
    with store._locks.get(sid):
        for path in (*inputs.hot, *inputs.sealed):
            if path != keep:
                path.unlink(missing_ok=True)
    return result


def _input_file(kind: str, path: Path) -> InputFile:
    try:
        st = path.stat()  # the file was just read whole; a closed or sealed file never changes
    except OSError:
        return InputFile(kind, -1, 0)  # gone already (a pull?): a note no catalog can match
    return InputFile(kind, st.st_size, st.st_ino)


def _note(
    sid: str, sealed: Path, sealable: list[Record], out: list[Record], files: dict[str, InputFile]
) -> SealNote | None:
    """What the new sealed file replaces, for this clone's catalog (sealnotes.py); None when
    the session no longer reads exactly like its inputs.

    The messages, states and checkpoints a reader shows are the same (that is what purging
    keeps), but a session's first record and latest activity are taken over every record
    read, so purging the record that held either moves the session's ``created_at`` or
    ``updated_at``: then the catalog must read the session again.
    """
    if _span(sealable) != _span(out):
        return None
    try:
        st = sealed.stat()
    except OSError:
        return None
    # As the catalog counts a sealed file: each record's JSON as read back, and a newline
    # (the length of a JSON object does not depend on the order of its keys).
    raw = sum(len(orjson.dumps(r)) + 1 for r in out)
    inputs = {n: f for n, f in files.items() if n != sealed.name}
    return SealNote(sid, sealed.name, st.st_size, st.st_ino, raw, len(out), inputs)


def _span(records: list[Record]) -> tuple[Key | None, int | None]:
    """The first (time, id) of ``records`` and their latest activity (a record's time, or a
    folded edit's), as a reader takes them (view.py)."""
    first: Key | None = None
    last: int | None = None
    for r in records:
        at = parse_us(r["created_at"])
        key = (at, r["id"])
        if first is None or key < first:
            first = key
        edited = r.get("edited_at")
        if isinstance(edited, str):
            at = max(at, parse_us(edited))
        if last is None or at > last:
            last = at
    return first, last


def _leave_notes(store: Store, results: Sequence[SessionCompaction]) -> None:
    """Tell this clone's catalog what the sealed files replace, so that its next refresh need
    not read those sessions again. Only an optimisation: a failure is logged."""
    try:
        write_notes(store.path, [r.note for r in results if r.note is not None])
    except OSError as e:
        log.warning("no seal notes (the next refresh reads those sessions again): %s", e)


def _forget_removed_segment(appender: Appender) -> None:
    """Drop an appender's descriptor on a segment that an earlier compaction removed.

    ``Appender.append`` notices ``st_nlink == 0`` itself; ``close_segment`` does not yet and
    would try to re-read the removed file by name (see the segments.py change proposed with
    issue 5). Called holding the session lock.
    """
    with appender.guard:
        if appender.fd is not None and os.fstat(appender.fd).st_nlink == 0:
            appender._close_fd()


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _is_dropped(inputs: _Inputs) -> bool:
    return any(r.get("kind") == "drop" for r in _chain(inputs.sealable, inputs.context))


def _read_inputs(folder: Path, names: list[str], writer: str) -> _Inputs:
    """Read a session's files, sorting them into what may be sealed and what is context.

    Only files that this clone owns may be sealed and removed: its closed hot segments and
    its own sealed files. Everything else (other clones' segments, open or closed, their
    sealed files, and format 1's sealed files, which name no owner) is read as context and
    left alone. That rule is what keeps git merges free of conflicts: a file is removed by
    one clone at most, so git can never see two sides replace it, which its rename detection
    reports as rename/rename or rename/delete (FORMAT.md, section 8).
    """
    inputs = _Inputs()
    sid = folder.name
    for name in sorted(names):
        path = folder / name
        sealed_match = layout.SEALED_RE.fullmatch(name)
        if sealed_match:
            try:
                records = read_sealed(path)
            except FileNotFoundError:
                inputs.problem = f"{name} vanished while being read (a git pull?)"
                return inputs
            except CorruptData as e:
                inputs.problem = str(e)
                return inputs
            if sealed_match.group(1) == writer:
                inputs.sealed.append(path)
                inputs.sealable.extend(records)
                inputs.files[name] = _input_file("sealed", path)
            else:
                inputs.context.extend(records)
        elif layout.HOT_RE.fullmatch(name):
            try:
                data = layout.read_bytes(path)
            except FileNotFoundError:
                inputs.problem = f"{name} vanished while being read (a git pull?)"
                return inputs
            scan = frames.scan(data, decompress=False)
            try:
                records = _hot_records(data, scan)
            except (ValueError, zstandard.ZstdError) as e:
                inputs.problem = f"{path} holds a frame that does not decode ({e})"
                return inputs
            damaged = [d for d in scan.damage if not d.torn]
            # Our own segment closed by an end marker is final: no process of this clone
            # appends after the marker. A damaged one stays where it is, for check() to
            # report and a human to restore.
            if layout.owner(name) == writer and scan.closed and not damaged:
                inputs.hot.append(path)
                inputs.sealable.extend(records)
                inputs.files[name] = _input_file("hot", path)
            else:
                inputs.other_hot += 1
                inputs.context.extend(records)
    # A malformed record of a file we seal stops the session (we never drop what we cannot
    # read); one in context is skipped, as readers skip it.
    inputs.context = [r for r in inputs.context if _malformed(r, sid) is None]
    for r in inputs.sealable:
        problem = _malformed(r, sid)
        if problem is not None:
            inputs.problem = f"a record is malformed ({problem}: {str(r)[:80]})"
            break
    return inputs


_local = threading.local()


def _hot_records(data: bytes, scan: frames.ScanResult) -> list[Record]:
    """The records of a scanned hot segment, decompressed with this thread's decompressor.

    Not through ``frames.scan(decompress=True)``: its module-wide ZstdDecompressor is not
    thread-safe, and compaction reads sessions in several threads (see the frames.py change
    proposed with issue 5).
    """
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    records: list[Record] = []
    for start, end, _ in scan.frames:
        payload = decompressor.decompress(data[start + frames.HEADER_SIZE : end])
        records.extend(frames.decode_records(payload))
    return records


def _malformed(r: Any, sid: str) -> str | None:
    """Why purging and sealing cannot rely on the record's shape, or None. The readers' own
    test (``record_problem``: every field replay, purge and ``write_sealed`` use, of the right
    type), and times that parse: a record a reader would skip must never be sealed as if it
    were sound, nor stop the compaction of other sessions with a KeyError half-way."""
    try:
        if isinstance(r, dict) and isinstance(r.get("created_at"), str):
            parse_us(r["created_at"])
    except InvalidInput as e:
        return str(e)
    problem = record_problem(r, sid, deep=False)
    if problem is not None:
        return problem
    try:
        edited = r.get("edited_at")
        if edited is not None:
            if not isinstance(edited, str):
                return "edited_at is not a string"
            parse_us(edited)
    except InvalidInput as e:
        return str(e)
    return None


def _chain(*parts: Iterable[Record]) -> Iterator[Record]:
    for part in parts:
        yield from part


# -- purging ---------------------------------------------------------------------------------


@dataclass
class PurgeStats:
    """What :func:`purge` removed."""

    messages_purged: int = 0
    edits_folded: int = 0
    records_purged: int = 0
    records_stripped: int = 0  # session records of a dropped session cut to their bare fields

    @property
    def changed(self) -> bool:
        return bool(
            self.messages_purged
            or self.edits_folded
            or self.records_purged
            or self.records_stripped
        )


def _key(r: Record) -> Key:
    """A record's place in time order: ``(created_at, id)``."""
    return (parse_us(r["created_at"]), r["id"])


def _version(r: Record) -> str:
    """Which version of its message a message record holds: "" for the original, else the id
    of the edit folded into it. Versions compare as record ids do, which sort by the time the
    record was written (view.py: newest wins by id, never by a caller-given created_at)."""
    return str(r.get("edit_id", ""))


def purge(
    sealable: list[Record],
    context: Sequence[Record] = (),
    *,
    keep_messages_until: Key | None = None,
) -> tuple[list[Record], PurgeStats]:
    """The records to seal in place of ``sealable``, with replaced content removed.

    ``context`` holds the records of files this compaction will not touch (other writers' hot
    segments, our current one); they justify removals but are never copied, since the files
    that hold them stay. Invariant: the view of ``result + context + anything else`` is the
    view of ``sealable + context + anything else``, for every set of other files, because every
    removal is justified by a record that is kept for good (a ``delete``, a newer version, a
    ``cp_delete``, a ``drop``) and what is rewritten (a message with an edit folded in) reads
    as the same version of the same message.

    ``keep_messages_until`` matters only for a dropped session: the order key of the newest
    message that a live branch still inherits (None: none does).
    """
    stats = PurgeStats()
    deleted: set[str] = set()
    cp_deletes: list[tuple[str, str, list[str] | None]] = []  # (id, namespace, ids or all)
    drop_id = ""  # the newest drop: it removes every record older than itself
    for r in _chain(sealable, context):
        kind = r.get("kind")
        if kind == "delete":
            deleted.add(r["target"])
        elif kind == "cp_delete":
            cp_deletes.append((r["id"], r.get("namespace", ""), r.get("checkpoint_ids")))
        elif kind == "drop":
            drop_id = max(drop_id, drop_cover(r))
    context_edits = _newest_edits(r for r in context if r.get("kind") == "edit")
    if drop_id:
        # A writer saves only the blobs its session does not hold yet, so a state written
        # after the drop (by a clone that had not seen it) may name blobs written before it.
        referenced = {
            h for r in _chain(sealable, context) if r.get("id", "") > drop_id for h in _blob_refs(r)
        }
        sealable = _dropped_session(sealable, drop_id, keep_messages_until, stats, referenced)

    messages: dict[str, Record] = {}  # newest version per message
    edits: list[Record] = []
    blobs: dict[str, Record] = {}  # one record per blob hash
    purged_messages: set[str] = set()
    seen: set[str] = set()
    kept: list[Record] = []
    for r in sealable:
        kind = r["kind"]
        rid = r["id"]
        if kind == "message":
            # A message may come twice: its original and a sealed copy with an edit folded in.
            if rid in deleted:
                purged_messages.add(rid)
                continue
            old = messages.get(rid)
            if old is not None:
                stats.records_purged += 1
            if old is None or _version(old) < _version(r):
                messages[rid] = r
        elif kind == "blob":
            # Blobs are named by their content: any one record of a hash serves every reader.
            old_blob = blobs.get(r["hash"])
            if old_blob is not None:
                stats.records_purged += 1
            if old_blob is None or rid < old_blob["id"]:
                blobs[r["hash"]] = r
        elif rid in seen:
            stats.records_purged += 1
        elif kind == "edit":
            seen.add(rid)
            if r["target"] in deleted:
                stats.records_purged += 1
            else:
                edits.append(r)
        elif kind == "checkpoint" and _checkpoint_deleted(r, cp_deletes):
            seen.add(rid)
            stats.records_purged += 1
        else:
            seen.add(rid)
            kept.append(r)

    own_edits = _newest_edits(edits)
    stats.edits_folded += len(edits) - len(own_edits)  # older edits: never visible again
    for target, edit in own_edits.items():
        newer = context_edits.get(target)
        if target in messages or (newer is not None and newer["id"] > edit["id"]):
            stats.edits_folded += 1  # folded below, or superseded by an edit that stays
        else:
            kept.append(edit)  # its message lives in a file we do not seal
    # Fold the newest edit, wherever it is, into each message we seal: an edit in another
    # writer's segment stays there too, but the content it replaced leaves our file now.
    for mid, msg in messages.items():
        candidates = [e for e in (own_edits.get(mid), context_edits.get(mid)) if e is not None]
        best = max(candidates, key=lambda e: str(e["id"]), default=None)
        if best is not None and best["id"] > _version(msg):
            if best is not own_edits.get(mid):
                stats.edits_folded += 1  # another clone's edit: the content it replaced goes
            msg = _fold(msg, best)
        kept.append(msg)
    stats.messages_purged += len(purged_messages)
    kept.extend(blobs.values())
    return kept, stats


def _newest_edits(edits: Iterable[Record]) -> dict[str, Record]:
    """The newest edit (by id) of each target."""
    newest: dict[str, Record] = {}
    for e in edits:
        old = newest.get(e["target"])
        if old is None or old["id"] < e["id"]:
            newest[e["target"]] = e
    return newest


def _fold(message: Record, edit: Record) -> Record:
    """The message with the edit's content, marked so that readers know its version."""
    folded = dict(message)
    folded["content"] = edit["content"]
    folded["edited_at"] = edit["created_at"]
    folded["edit_id"] = edit["id"]
    return folded


def _checkpoint_deleted(r: Record, cp_deletes: list[tuple[str, str, list[str] | None]]) -> bool:
    ns = r.get("namespace", "")
    cp_id = r.get("checkpoint_id")
    return any(
        d_id > r["id"] and d_ns == ns and (ids is None or cp_id in ids)
        for d_id, d_ns, ids in cp_deletes
    )


def _blob_refs(r: Record) -> list[str]:
    """The blob hashes a state, checkpoint or cp_writes record refers to."""
    kind = r.get("kind")
    if kind in ("state", "checkpoint"):
        refs: list[Any] = [r]
    elif kind == "cp_writes" and isinstance(r.get("writes"), list):
        # Each write is [channel, ref]: a blob hash, or {"parts": {key: hash}} for a dict.
        refs = [w[1] for w in r["writes"] if isinstance(w, (list, tuple)) and len(w) == 2]
    else:
        return []
    out: list[str] = []
    for ref in refs:
        if isinstance(ref, str):
            out.append(ref)
        elif isinstance(ref, dict):
            parts = ref.get("parts")
            if isinstance(parts, dict):
                out.extend(h for h in parts.values() if isinstance(h, str))
            elif isinstance(ref.get("value"), str):
                out.append(ref["value"])
    return out


def _dropped_session(
    sealable: list[Record],
    drop_id: str,
    keep_until: Key | None,
    stats: PurgeStats,
    referenced: frozenset[str] | set[str] = frozenset(),
) -> list[Record]:
    """What a deleted session keeps of the records older than its newest drop: its drop
    records, its session records cut down to who it belongs to, and what live branches
    inherit. Records written after the drop (by a clone that had not seen it) stay as they
    are, under the usual rules: they are what readers show of the session now.
    """
    out: list[Record] = []
    keep = _BARE_FIELDS if keep_until is None else (*_BARE_FIELDS, "parent")
    for r in sealable:
        kind = r["kind"]
        if r["id"] > drop_id or kind == "drop":
            out.append(r)
        elif kind == "session":
            bare = {k: r[k] for k in keep if k in r}
            if len(bare) != len(r):
                stats.records_stripped += 1
            out.append(bare)
        elif keep_until is not None and kind in ("edit", "delete"):
            out.append(r)  # purged below by the usual rules
        elif keep_until is not None and kind == "message" and _key(r) <= keep_until:
            out.append(r)
        elif kind == "blob" and r.get("hash") in referenced:
            out.append(r)  # a record written after the drop still needs it
        elif kind == "message":
            stats.messages_purged += 1
        else:
            stats.records_purged += 1
    return out


class _Lineage:
    """Which sessions are branches of which, to keep what a live branch inherits.

    Built on first use only (it reads every session's view), since it only matters when a
    dropped session is compacted.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        # parent id -> [(branch id, its parent field: {"session", "message", "created_at"?})]
        self._children: dict[str, list[tuple[str, dict[str, Any]]]] | None = None
        self._dropped: set[str] = set()
        self._guard = threading.Lock()  # compaction threads share one lineage

    def _build(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        with self._guard:
            if self._children is None:
                children: dict[str, list[tuple[str, dict[str, Any]]]] = {}
                for sid in self.store.session_ids():
                    try:
                        validate_session_id(sid)
                    except InvalidInput:
                        continue
                    # Under the view lock: another thread's rebuild of this view would show
                    # a branch without its parent, and the parent's compaction would then
                    # purge what the branch inherits.
                    with self.store._reading(sid) as view:
                        if view.dropped is not None:
                            self._dropped.add(sid)
                        parent = view.lineage_field("parent")
                    if isinstance(parent, dict) and isinstance(parent.get("session"), str):
                        children.setdefault(parent["session"], []).append((sid, parent))
                self._children = children
            return self._children

    def _lives_on(self, sid: str, seen: frozenset[str]) -> bool:
        """True if ``sid`` is visible, or a visible session inherits through it."""
        if sid not in self._dropped:
            return True
        return any(
            child not in seen and self._lives_on(child, seen | {child})
            for child, _ in self._build().get(sid, [])
        )

    def needed_until(self, sid: str) -> Key | None:
        """The order key of the newest message of ``sid`` that a live branch shows, or None."""
        best: Key | None = None
        for child, parent in self._build().get(sid, []):
            if not self._lives_on(child, frozenset((sid, child))):
                continue
            key = self._branch_point(sid, parent)
            if key is not None and (best is None or key > best):
                best = key
        return best

    def _branch_point(self, sid: str, parent: dict[str, Any]) -> Key | None:
        """Where a branch cuts its parent's messages, as Store._select does: by the branch
        message's key when the branch recorded it (so the cut holds after that message is
        deleted), else at the branch message itself, or nowhere once it is gone."""
        at = str(parent.get("message"))
        if isinstance(parent.get("created_at"), str):
            try:
                return (parse_us(parent["created_at"]), at)
            except InvalidInput:
                pass  # a time that does not parse: cut at the branch message, as readers do
        for m in self.store._ordered(sid):
            if m.id == at:
                return (to_us(m.created_at), m.id)
        return None


# -- automatic compaction --------------------------------------------------------------------


def on_segment_rolled(store: Store, session_id: str) -> None:
    """Called by the store after an append rolled a hot segment (it passed ``roll_bytes``).

    Queues the session for compaction in a background thread of this process, unless the store
    was opened with ``auto_compact=False``. Returns at once: the appending thread never waits.
    """
    if not getattr(store, "auto_compact", True):
        return
    with _workers_guard:
        worker = _workers.get(store)
        if worker is None:
            worker = _workers[store] = _Worker(store)
    worker.submit(session_id)


def wait_for_background(store: Store, timeout: float | None = None) -> bool:
    """Wait until the store's background compactions are done; False on timeout."""
    with _workers_guard:
        worker = _workers.get(store)
    return True if worker is None else worker.wait_idle(timeout)


class _Worker:
    """One background thread per open store, compacting queued sessions one after the other.

    The thread exits when the queue is empty and is started again by the next roll, so an idle
    store has no thread. It takes the store-wide compaction lock per session, polling so that
    interpreter exit can stop it; a compaction cut short by exit is like a crash: harmless.
    """

    def __init__(self, store: Store) -> None:
        self._store = weakref.ref(store)
        self._queue: list[str] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False

    def submit(self, sid: str) -> None:
        with self._cond:
            if sid not in self._queue:
                self._queue.append(sid)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="convstore-compaction", daemon=True
                )
                self._thread.start()

    def wait_idle(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if _exiting.is_set():
                    self._queue.clear()
                if not self._queue:
                    self._thread = None
                    self._cond.notify_all()
                    return
                sid = self._queue.pop(0)
                self._busy = True
            try:
                store = self._store()
                if store is not None:
                    self._compact_one(store, sid)
                del store
            except Exception:  # a background thread must not die silently
                log.exception("background compaction of session %r failed", sid)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _compact_one(self, store: Store, sid: str) -> None:
        lock = store_lock(store.path, LOCK_NAME, timeout=1.0)
        while True:
            try:
                lock.acquire()
                break
            except filelock.Timeout:
                if _exiting.is_set():
                    return
        try:
            result = _compact_session(store, sid, _Lineage(store))
            _leave_notes(store, [result])
        finally:
            lock.release()
        if result.skipped and result.skipped.startswith("not compacted"):
            log.warning("session %r %s", sid, result.skipped)


_workers: weakref.WeakKeyDictionary[Store, _Worker] = weakref.WeakKeyDictionary()
_workers_guard = threading.Lock()
_exiting = threading.Event()


def _forget_workers_after_fork() -> None:
    # A forked child has none of the parent's compaction threads, and one of them may have
    # held a worker's condition or this guard: waiting on them (close() does) would hang.
    global _workers, _workers_guard
    _workers = weakref.WeakKeyDictionary()
    _workers_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)


@atexit.register
def _stop_workers() -> None:
    # atexit runs before daemon threads are frozen: let a running compaction finish its
    # current session (bounded) instead of leaving a temporary file behind.
    _exiting.set()
    with _workers_guard:
        workers = list(_workers.values())
    for worker in workers:
        worker.wait_idle(30.0)
