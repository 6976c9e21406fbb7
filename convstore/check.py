"""``Store.check()``: re-derive every invariant of the format from the files themselves."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import frames, layout
from .errors import ConvstoreError, CorruptData, InvalidInput
from .ids import validate_session_id
from .records import record_problem
from .sealed import read_sealed

if TYPE_CHECKING:
    from .store import Store


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
        head = f"{self.sessions} sessions, {self.files} files, {self.records} records"
        if not self.issues:
            return f"{head}: ok"
        return "\n".join(
            [f"{head}: {len(self.issues)} problem(s)"] + [f"  {i}" for i in self.issues]
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
    for name in sorted(layout.list_names(sessions_dir)) if sessions_dir.exists() else []:
        folder = sessions_dir / name
        try:
            validate_session_id(name)
        except InvalidInput as e:
            report.issues.append(Issue(str(folder), f"not a session folder: {e}"))
            continue
        report.sessions += 1
        _check_session(store, name, report, repair)
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


def _check_session(store: Store, sid: str, report: CheckReport, repair: bool) -> None:
    folder = store._session_folder(sid)
    seen: dict[str, str] = {}  # record id -> kind, to find ids reused for different records
    blobs: set[str] = set()
    refs: list[tuple[object, str]] = []  # (blob hash, where)
    has_session_record = False
    names = sorted(layout.list_names(folder))  # links: reported by _check_tree
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
                report.issues.append(Issue(str(path), str(e)))
                continue
        elif name.startswith(".") and name.endswith(".tmp"):
            # A compaction that died before its rename leaves these; nothing refers to them.
            if repair:
                path.unlink(missing_ok=True)
            report.issues.append(Issue(str(path), "leftover temporary file", None, repair))
            continue
        else:
            report.issues.append(Issue(str(path), "unknown file in a session folder"))
            continue
        for r in records:
            report.records += 1
            problem = record_problem(r, sid)
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
                refs.extend((h, f"{kind} {r['id']}") for h in hashes)
            elif kind == "cp_writes":
                for _, ref in r.get("writes", []):
                    hashes = list(ref["parts"].values()) if isinstance(ref, dict) else [ref]
                    refs.extend((h, f"writes {r['id']}") for h in hashes)
    dropped = "drop" in seen.values()
    for h, where in refs:
        # A clone that did not know of a deletion may still have referred to blobs that the
        # deleting clone's compaction purged: for a dropped session that is expected.
        if h not in blobs and not dropped:
            report.issues.append(Issue(str(folder), f"{where} refers to missing blob {h}"))
    if seen and not has_session_record:
        report.issues.append(Issue(str(folder), "no session record: the session was never created"))


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
