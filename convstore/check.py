"""``Store.check()``: re-derive every invariant of the format from the files themselves."""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock

from . import frames, layout
from .errors import ConvstoreError, CorruptData, InvalidInput
from .ids import fold_case, portability_problem, validate_session_id
from .locks import store_lock
from .records import record_problem
from .sealed import read_sealed
from .wording import plural

if TYPE_CHECKING:
    from .store import Store

# check() takes no lock to read: it must never hold up a writer or a compaction. A session whose
# files change under it (a compaction, prune or pull deletes a file it listed) is read again from
# a new listing; the last attempt holds the compaction lock, which every compaction on this
# machine holds while it writes and deletes files (compaction.LOCK_NAME, LOCK_TIMEOUT).
_ATTEMPTS = 3
_COMPACTION_LOCK = "compaction"
_COMPACTION_WAIT = 120.0


@dataclass
class Issue:
    """One problem found by check()."""

    path: str
    problem: str
    offset: int | None = None
    repaired: bool = False

    def __str__(self) -> str:
        where = self.path if self.offset is None else f"{self.path} @{self.offset}"
        return f"{where}: {self.problem}" + (" (repaired)" if self.repaired else "")


@dataclass
class CheckReport:
    """What check() read and what it found."""

    sessions: int = 0
    files: int = 0
    records: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong that a repair has not fixed."""
        return all(i.repaired for i in self.issues)

    def __str__(self) -> str:
        head = ", ".join(
            [
                plural(self.sessions, "session"),
                plural(self.files, "file"),
                plural(self.records, "record"),
            ]
        )
        if not self.issues:
            return f"{head}: ok"
        return "\n".join(
            [f"{head}: {plural(len(self.issues), 'problem')}"] + [f"  {i}" for i in self.issues]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sessions": self.sessions,
            "files": self.files,
            "records": self.records,
            "issues": [
                {"path": i.path, "offset": i.offset, "problem": i.problem, "repaired": i.repaired}
                for i in self.issues
            ],
        }


_CASE = (
    "sessions {!r} and {!r} differ only by case: on macOS and Windows they share one folder; "
    "rename one of them on a case-sensitive system (export it, import it under a new id)"
)


def check_store(store: Store, *, repair: bool = False) -> CheckReport:
    report = CheckReport()
    root = store.path
    _check_tree(root, report, repair)
    try:
        layout.read_marker(root)
    except ConvstoreError as e:
        report.issues.append(Issue(str(root / layout.MARKER), str(e)))
    gitignore = root / ".gitignore"
    if not gitignore.exists() or "/.cache/" not in _read_text(gitignore):
        fixed = False
        if repair:
            fd = layout.open_fd(gitignore, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            with os.fdopen(fd, "ab") as fh:
                fh.write(layout.GITIGNORE.encode())
            fixed = True
        report.issues.append(Issue(str(gitignore), "does not keep .cache/ out of git", None, fixed))
    sessions_dir = root / layout.SESSIONS
    folded: dict[str, str] = {}
    for name in sorted(layout.list_names(sessions_dir)) if sessions_dir.exists() else []:
        folder = sessions_dir / name
        try:
            validate_session_id(name)
        except InvalidInput as e:
            report.issues.append(Issue(str(folder), f"not a session folder: {e}"))
            continue
        report.sessions += 1
        problem = portability_problem(name)
        if problem is not None:
            report.issues.append(
                Issue(str(folder), f"session id {name!r} {problem}: the store is not portable")
            )
        twin = folded.setdefault(fold_case(name), name)
        if twin != name:
            report.issues.append(Issue(str(folder), _CASE.format(twin, name)))
        _check_settled(store, name, report, repair)
    return report


def _read_text(path: Path) -> str:
    try:
        return layout.read_bytes(path).decode("utf-8", "replace")
    except (OSError, ConvstoreError):
        return ""


def _check_tree(root: Path, report: CheckReport, repair: bool) -> None:
    """Links and modes, everywhere in the store but ``.git`` (git's, with git's modes).

    A link is reported and, with ``repair``, removed: convstore never reads or writes through
    one, and a link holds no data (its target is left alone). A mode looser or narrower than
    0700 (folders) or 0600 (files) is reported and, with ``repair``, set: a git checkout or
    a copy makes them 0755 and 0644 under the usual umask, which lets any local user read
    every conversation. The root may be reached through a link the user chose: its mode is
    its target's.
    """
    _check_mode(root, os.stat(root), report, repair)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            continue  # an old index generation or cache folder removed since it was listed
        except OSError as e:
            report.issues.append(Issue(str(folder), f"cannot be listed: {e.strerror}"))
            continue
        for entry in entries:
            if folder == root and entry.name == ".git":
                continue
            path = Path(entry.path)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing (a compaction, a cache collection)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                if repair:
                    path.unlink(missing_ok=True)
                problem = (
                    f"is a symbolic link (to {target}); convstore never follows links inside "
                    "a store: `convstore check --repair` removes the link, not its target"
                )
                report.issues.append(Issue(str(path), problem, None, repair))
                continue
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                report.issues.append(
                    Issue(
                        str(path),
                        "is neither a file nor a folder; remove it (convstore never reads it)",
                    )
                )
                continue
            _check_mode(path, st, report, repair)
            if stat.S_ISDIR(st.st_mode):
                stack.append(path)


def _check_mode(path: Path, st: os.stat_result, report: CheckReport, repair: bool) -> None:
    folder = stat.S_ISDIR(st.st_mode)
    want = layout.DIR_MODE if folder else layout.FILE_MODE
    have = stat.S_IMODE(st.st_mode)
    if have == want:
        return
    fixed = False
    if repair:
        try:
            os.chmod(path, want)
            fixed = True
        except OSError:
            pass
    who = "other users can read it" if have & 0o077 else "it must be exactly that"
    problem = (
        f"mode {have:04o}, should be {want:04o} ({who}): "
        f"`convstore check --repair` or `chmod {want:o} {path}` fixes it"
    )
    report.issues.append(Issue(str(path), problem, None, fixed))


def _check_settled(store: Store, sid: str, report: CheckReport, repair: bool) -> None:
    """Check one session from a listing that held while it was read (see _ATTEMPTS)."""
    repaired: list[Issue] = []  # repairs made by an attempt that had to start over
    for attempt in range(_ATTEMPTS):
        part = CheckReport()
        try:
            if attempt < _ATTEMPTS - 1:
                _check_session(store, sid, part, repair, locked=False)
            else:
                with _compaction_lock(store, _COMPACTION_WAIT) as held:
                    if not held:
                        report.issues.append(
                            Issue(
                                str(store._session_folder(sid)),
                                "changed while check read it, and the store's compaction lock "
                                "could not be taken to read it still: run check again",
                            )
                        )
                        return
                    _check_session(store, sid, part, repair, locked=True)
        except FileNotFoundError:
            repaired += [i for i in part.issues if i.repaired]
            if not store._session_folder(sid).is_dir():
                report.issues += repaired
                return  # deleted meanwhile (prune, a pull): nothing left to check
            continue
        report.files += part.files
        report.records += part.records
        report.issues += repaired + part.issues
        return
    report.issues += repaired
    report.issues.append(
        Issue(
            str(store._session_folder(sid)),
            "its files kept changing while check read them (a git pull?): run check again",
        )
    )


@contextlib.contextmanager
def _compaction_lock(store: Store, wait: float) -> Iterator[bool]:
    """The store's compaction lock if it can be had within ``wait`` seconds (True), else
    nothing (False)."""
    try:
        lock = store_lock(store.path, _COMPACTION_LOCK, timeout=wait)
        lock.acquire()
    except (filelock.Timeout, OSError):  # held, or a read-only .cache: no lock to be had
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _check_session(
    store: Store, sid: str, report: CheckReport, repair: bool, *, locked: bool
) -> None:
    """Check one session; FileNotFoundError when a file it listed vanished (read it again).
    ``locked``: the caller holds the compaction lock."""
    folder = store._session_folder(sid)
    seen: dict[str, str] = {}  # record id -> kind, to find ids reused for different records
    blobs: set[str] = set()
    refs: list[tuple[object, str, str]] = []  # (blob hash, where, record id)
    has_session_record = False
    names = sorted(layout.list_names(folder))  # links: reported by _check_tree
    temps: list[Path] = []
    newest: dict[str, int] = {}  # writer -> its newest sequence number
    for name in names:
        m = layout.HOT_RE.fullmatch(name)
        if m:
            newest[m.group(1)] = max(newest.get(m.group(1), 0), int(m.group(2)))
    for name in names:
        path = folder / name
        hot = layout.HOT_RE.fullmatch(name)
        if hot:
            report.files += 1
            own = hot.group(1) == store.writer_id
            current = int(hot.group(2)) == newest[hot.group(1)]
            records = _check_hot(store, sid, path, report, repair=repair and own, current=current)
        elif layout.SEALED_RE.fullmatch(name):
            report.files += 1
            try:
                records = read_sealed(path, verify=True)
            except CorruptData as e:
                if not path.exists():
                    raise FileNotFoundError(path) from None  # replaced as we read it
                report.issues.append(Issue(str(path), str(e)))
                continue
        elif name.startswith(".") and name.endswith(".tmp"):
            temps.append(path)
            continue
        else:
            report.issues.append(Issue(str(path), "unknown file in a session folder"))
            continue
        for r in records:
            report.records += 1
            problem = record_problem(r, sid)
            other_sid = r.get("session") if isinstance(r, dict) else None
            if problem and isinstance(other_sid, str) and fold_case(other_sid) == fold_case(sid):
                # A case-insensitive file system put two sessions into one folder.
                problem = _CASE.format(sid, other_sid)
            if problem:
                report.issues.append(Issue(str(path), f"record {r.get('id')!r}: {problem}"))
                continue
            kind = r["kind"]
            other = seen.setdefault(r["id"], kind)
            if other != kind:
                report.issues.append(
                    Issue(str(path), f"id {r['id']} is used by a {other} and a {kind}")
                )
            has_session_record |= kind == "session"
            if kind == "blob":
                blobs.add(r["hash"])
            elif kind in ("state", "checkpoint"):
                hashes = list(r["parts"].values()) if "parts" in r else [r.get("value")]
                refs.extend((h, f"{kind} {r['id']}", r["id"]) for h in hashes)
            elif kind == "cp_writes":
                for _, ref in r.get("writes", []):
                    hashes = list(ref["parts"].values()) if isinstance(ref, dict) else [ref]
                    refs.extend((h, f"writes {r['id']}", r["id"]) for h in hashes)
    if temps:
        _check_temps(store, temps, report, repair, locked)
    report.issues += _missing_own_segments(store, sid)
    drop_id = max((rid for rid, kind in seen.items() if kind == "drop"), default="")
    for h, where, rid in refs:
        # A record older than the session's newest drop is hidden, and the deleting clone's
        # compaction may have purged the blobs it refers to: expected. One written after the
        # drop is shown (FORMAT.md section 5, rule 5), so its blobs must be there.
        if h not in blobs and rid > drop_id:
            report.issues.append(Issue(str(folder), f"{where} refers to missing blob {h}"))
    if seen and not has_session_record:
        report.issues.append(Issue(str(folder), "no session record: the session was never created"))


def _check_temps(
    store: Store, temps: list[Path], report: CheckReport, repair: bool, locked: bool
) -> None:
    """``.sealing.*.tmp`` files: a compaction's output before its rename. Every compaction
    writes them holding the compaction lock, so one found while that lock is free is left over
    from a compaction that died, and is reported (and removed by a repair); while the lock is
    held the file may be the live compaction's own, and is left alone (a later check sees it
    if it stays)."""
    with contextlib.nullcontext(True) if locked else _compaction_lock(store, 0) as held:
        if not held:
            return
        for path in temps:
            if not path.exists():
                continue  # renamed or removed since the listing
            if repair:
                path.unlink(missing_ok=True)
            report.issues.append(Issue(str(path), "leftover temporary file", None, repair))


def _missing_own_segments(store: Store, sid: str) -> list[Issue]:
    """Segments of this clone's writer that must exist and do not.

    What check can know: the newest segment of a writer always exists (a writer that closes
    a segment creates the next at once, under the session lock), and a writer's segments are
    deleted oldest first (compaction seals every closed one it finds and deletes them in
    order), so for this clone's own writer a gap between two of its segments, a newest
    segment closed by an end marker, or a segment this process appended to with no newer one
    left, means a file was lost. Another clone's segments are not judged: their owner may have
    sealed and deleted any of them, and a pull bring that deletion here.
    """
    folder = store._session_folder(sid)
    if not _own_missing(store, sid, folder):
        return []
    # Look again under the session lock: a writer that rolls, or a compaction closing this
    # writer's segment, holds it between the end marker and the next segment's creation.
    with store._locks.get(sid):
        return _own_missing(store, sid, folder)


def _own_missing(store: Store, sid: str, folder: Path) -> list[Issue]:
    writer = store.writer_id
    seqs = sorted(
        int(m.group(2))
        for name in layout.list_names(folder)  # links are reported apart (_check_tree)
        if (m := layout.HOT_RE.fullmatch(name)) and m.group(1) == writer
    )
    issues = []
    for a, b in itertools.pairwise(seqs):
        for seq in range(a + 1, b):
            issues.append(
                Issue(
                    str(folder / layout.hot_name(writer, seq)),
                    f"missing: a gap between segments {a} and {b} of this clone's writer "
                    "(segments are deleted oldest first); restore it from git or a backup",
                )
            )
    newest = seqs[-1] if seqs else 0
    with store._guard:
        appender = store._appenders.get(sid)
        expected = appender.seq if appender is not None and appender.path is not None else 0
    why = "this process appended to it, and no newer segment of this clone's writer exists"
    if newest:
        with open(folder / layout.hot_name(writer, newest), "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - len(frames.END_MARKER)))
            if fh.read() == frames.END_MARKER and newest + 1 > expected:
                expected = newest + 1
                why = (
                    f"segment {newest} is closed by an end marker, and a writer creates the "
                    "next one at once"
                )
    if expected > newest:
        issues.append(
            Issue(
                str(folder / layout.hot_name(writer, expected)),
                f"missing: the newest segment of this clone's writer ({why}); it was deleted "
                "or lost: restore it from git or a backup",
            )
        )
    return issues


def _check_hot(
    store: Store, sid: str, path: Path, report: CheckReport, *, repair: bool, current: bool
) -> list[dict[str, Any]]:
    """Check one hot segment. Only the writer's ``current`` (newest) segment can have a torn
    tail: every older one was closed by an end marker before its successor was created, so
    an older segment that does not end with one has lost its end, and that is damage."""
    result = frames.scan(layout.read_bytes(path))
    if not current:
        if not result.closed:
            report.issues.append(
                Issue(
                    str(path),
                    "segment has a successor but no end marker: its end was lost (truncated, "
                    "or an older copy restored); restore it from git or another clone",
                )
            )
        for dmg in result.damage:
            dmg.torn = False
        repair = False
    elif result.torn is not None:
        # An incomplete frame at the end may be an append in flight: look again holding the
        # session lock, when no writer of this machine can be mid-append.
        with store._locks.get(sid):
            result = frames.scan(layout.read_bytes(path))
            torn = result.torn
            if torn is not None and repair:
                # These bytes belong to a writer that died mid-write and were never
                # acknowledged. Only this clone's own files are repaired: another clone's
                # segment is its owner's to fix (invariant 3).
                fd = layout.open_fd(path, os.O_RDWR)
                try:
                    os.ftruncate(fd, torn.offset)
                    os.fsync(fd)
                finally:
                    os.close(fd)
    records: list[dict[str, Any]] = []
    for dmg in result.damage:
        if dmg.torn:
            what = f"torn tail ({dmg.reason}: an append cut short)"
        else:
            what = f"damaged frame: {dmg.reason}"
        fixed = dmg.torn and repair
        size = dmg.end - dmg.offset
        report.issues.append(Issue(str(path), f"{what}, {size} bytes", dmg.offset, fixed))
    for start, _, payload in result.frames:
        try:
            records.extend(frames.decode_records(payload))
        except ValueError as e:
            report.issues.append(Issue(str(path), f"frame does not hold JSON lines: {e}", start))
    return records
