"""``Store.check()``: re-derive every invariant of the format from the files themselves."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import frames, layout
from .errors import ConvstoreError, CorruptData, InvalidInput
from .ids import parse_us, validate_session_id
from .records import KINDS, check_content, check_role
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
    try:
        layout.read_marker(root)
    except ConvstoreError as e:
        report.issues.append(Issue(str(root / layout.MARKER), str(e)))
    gitignore = root / ".gitignore"
    if not gitignore.exists() or "/.cache/" not in gitignore.read_text("utf-8", "replace"):
        fixed = False
        if repair:
            with open(gitignore, "a", encoding="utf-8") as fh:
                fh.write(layout.GITIGNORE)
            fixed = True
        report.issues.append(Issue(str(gitignore), "does not keep .cache/ out of git", None, fixed))
    sessions_dir = root / layout.SESSIONS
    for name in sorted(os.listdir(sessions_dir)) if sessions_dir.exists() else []:
        folder = sessions_dir / name
        try:
            validate_session_id(name)
        except InvalidInput as e:
            report.issues.append(Issue(str(folder), f"not a session folder: {e}"))
            continue
        report.sessions += 1
        _check_session(store, name, report, repair)
    return report


def _check_session(store: Store, sid: str, report: CheckReport, repair: bool) -> None:
    folder = store._session_folder(sid)
    seen: dict[str, str] = {}  # record id -> kind, to find ids reused for different records
    blobs: set[str] = set()
    refs: list[tuple[object, str]] = []  # (blob hash, where)
    has_session_record = False
    with store._locks.get(sid):  # so an append in flight is not mistaken for a torn tail
        for name in sorted(os.listdir(folder)):
            path = folder / name
            if layout.HOT_RE.fullmatch(name):
                report.files += 1
                records = _check_hot(path, report, repair)
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
                problem = _record_problem(r, sid)
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
    for h, where in refs:
        if h not in blobs:
            report.issues.append(Issue(str(folder), f"{where} refers to missing blob {h}"))
    if seen and not has_session_record:
        report.issues.append(Issue(str(folder), "no session record: the session was never created"))


def _check_hot(path: Any, report: CheckReport, repair: bool) -> list[dict[str, Any]]:
    data = path.read_bytes()
    result = frames.scan(data)
    records: list[dict[str, Any]] = []
    for dmg in result.damage:
        fixed = False
        if dmg.torn and repair:
            # We hold the session lock: no append is in flight, so these bytes belong to a
            # writer that died mid-write and were never acknowledged.
            with open(path, "r+b") as fh:
                fh.truncate(dmg.offset)
                os.fsync(fh.fileno())
            fixed = True
        what = "torn tail (an append cut short)" if dmg.torn else f"damaged frame: {dmg.reason}"
        report.issues.append(
            Issue(str(path), f"{what}, {dmg.end - dmg.offset} bytes", dmg.offset, fixed)
        )
    for start, _, payload in result.frames:
        try:
            records.extend(frames.decode_records(payload))
        except ValueError as e:
            report.issues.append(Issue(str(path), f"frame does not hold JSON lines: {e}", start))
    return records


def _record_problem(r: Any, sid: str) -> str | None:
    if not isinstance(r, dict):
        return "not a JSON object"
    for key in ("id", "kind", "session", "created_at"):
        if not isinstance(r.get(key), str):
            return f"missing {key}"
    if r["kind"] not in KINDS:
        return f"unknown kind {r['kind']!r}"
    if r["session"] != sid:
        return f"belongs to session {r['session']!r}, found in {sid!r}"
    try:
        parse_us(r["created_at"])
        if r["kind"] == "message":
            check_role(r.get("role"))
            check_content(r.get("content"))
        elif r["kind"] in ("edit", "delete") and not isinstance(r.get("target"), str):
            return "no target"
        elif r["kind"] == "edit":
            check_content(r.get("content"))
        elif r["kind"] == "blob" and not isinstance(r.get("hash"), str):
            return "blob without hash"
    except InvalidInput as e:
        return str(e)
    return None
