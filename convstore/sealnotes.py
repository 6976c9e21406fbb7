"""Seal notes: what a compaction in this clone replaced, so the catalog need not read it again.

Compaction (``compaction.py``) replaces a session's closed hot segments and older sealed files
with one sealed file whose records read exactly like its inputs (that is what lets readers see
the overlap safely). The catalog (``ingest.py``) has usually read those inputs already, so
re-reading the session to find nothing new is wasted work: a fresh process after compacting a
store of a million messages spent most of a minute on it.

So compaction leaves a note in ``.cache/sealed-notes/``: the sealed file's name, size, inode and
record figures, and the name, size and inode of every input. A whole-store compaction writes one
file of notes per batch of sessions, after the batch (20,000 files, one per session, cost over
a second to read and delete at a million messages); a refresh that runs before the file is
there reads those sessions as before. A refresh that finds a folder changed checks whether the notes
explain the change exactly (every input it had read in full is gone, the sealed file is there,
nothing else moved); then it records the new files without reading a record. Anything else (no
note, a partly read input, a file the notes do not mention) is read as before, so a missing,
stale or unreadable note costs time, never correctness.

Notes are local and derived like the rest of ``.cache``: compactions in other clones leave none
(their sealed files arrive by git and are read), and deleting them is always safe.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .errors import UnsafePath
from .layout import CACHE, HOT_RE, SEALED_RE, create_file, private_dir, read_bytes

NOTES = "sealed-notes"


@dataclass(frozen=True)
class InputFile:
    """A file a compaction read in full and then deleted."""

    kind: str  # "hot" (a closed segment) or "sealed"
    size: int
    inode: int


@dataclass(frozen=True)
class SealNote:
    """One compaction of one session: the sealed file it wrote and the inputs it replaced."""

    session: str
    sealed: str  # the sealed file's name
    size: int
    inode: int
    raw_bytes: int  # what the catalog counts for the file: each record's JSON and a newline
    records: int
    inputs: dict[str, InputFile]


@dataclass
class Notes:
    """The notes found: by session and sealed file name, and by the file that holds them."""

    by_session: dict[str, dict[str, SealNote]] = field(default_factory=dict)
    files: dict[str, list[SealNote]] = field(default_factory=dict)


def notes_dir(store_path: Path) -> Path:
    return store_path / CACHE / NOTES


def write_notes(store_path: Path, notes: Sequence[SealNote]) -> None:
    """Leave ``notes`` for the catalog, in one file (a whole-store compaction writes one per
    batch of sessions, not one per session): whole or not at all (a rename), never fsynced (a
    note lost in a power cut only means a session is read again)."""
    if not notes:
        return
    folder = notes_dir(store_path)
    private_dir(folder, below=store_path)
    body = [
        {
            "session": n.session,
            "sealed": n.sealed,
            "size": n.size,
            "inode": n.inode,
            "raw_bytes": n.raw_bytes,
            "records": n.records,
            "inputs": {k: [f.kind, f.size, f.inode] for k, f in sorted(n.inputs.items())},
        }
        for n in notes
    ]
    name = secrets.token_hex(8)
    tmp = folder / f".{name}.tmp"
    with create_file(tmp) as fh:
        fh.write(orjson.dumps({"notes": body}))
    os.replace(tmp, folder / f"{name}.json")


def read_notes(store_path: Path) -> Notes:
    """Every note: one listing when there are none. An unreadable file is deleted."""
    found = Notes()
    folder = notes_dir(store_path)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return found
    for name in names:
        if name.endswith(".tmp"):
            _remove_if_stale(folder / name)  # a writer that died between write and rename
            continue
        if not name.endswith(".json"):
            continue
        got = _parse(folder / name)
        if got is None:
            with contextlib.suppress(OSError):
                (folder / name).unlink()  # worth nothing, so gone
            continue
        found.files[name] = got
        for note in got:
            found.by_session.setdefault(note.session, {})[note.sealed] = note
    return found


def _remove_if_stale(path: Path, age_s: float = 3600.0) -> None:
    with contextlib.suppress(OSError):
        if time.time() - path.stat().st_mtime > age_s:
            path.unlink()


def _parse(path: Path) -> list[SealNote] | None:
    try:
        out = []
        for d in orjson.loads(read_bytes(path))["notes"]:
            inputs = {}
            for name, (kind, size, inode) in d["inputs"].items():
                pattern = HOT_RE if kind == "hot" else SEALED_RE if kind == "sealed" else None
                if pattern is None or not pattern.fullmatch(name):
                    return None
                inputs[name] = InputFile(kind, int(size), int(inode))
            note = SealNote(
                str(d["session"]),
                str(d["sealed"]),
                int(d["size"]),
                int(d["inode"]),
                int(d["raw_bytes"]),
                int(d["records"]),
                inputs,
            )
            if not SEALED_RE.fullmatch(note.sealed):
                return None
            out.append(note)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, UnsafePath):
        return None
    return out


def remove_files(store_path: Path, names: Iterable[str]) -> None:
    folder = notes_dir(store_path)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
