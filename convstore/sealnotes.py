"""Seal notes: what a compaction in this clone replaced, so the catalog need not read it again.

Compaction (``compaction.py``) replaces a session's closed hot segments and older sealed files
with one sealed file whose records read exactly like its inputs (that is what lets readers see
the overlap safely). The catalog (``ingest.py``) has usually read those inputs already, so
re-reading the session to find nothing new is wasted work: a fresh process after compacting a
store of a million messages spent most of a minute on it.

So, once the sealed file is durable and before any input is deleted, compaction leaves a note in
``.cache/sealed-notes/``: the sealed file's name, size, inode and record figures, and the name,
size and inode of every input. A refresh that finds a folder changed checks whether the notes
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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from .layout import CACHE, HOT_RE, SEALED_RE

NOTES = "sealed-notes"
_SEP = "@"  # not in the session id charset (ids.py), so "<session>@<sealed name>" splits once


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


def notes_dir(store_path: Path) -> Path:
    return store_path / CACHE / NOTES


def write_note(store_path: Path, note: SealNote) -> None:
    """Leave ``note`` for the catalog: whole or not at all (a rename), never fsynced (a note
    lost in a power cut only means the session is read again)."""
    folder = notes_dir(store_path)
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "session": note.session,
        "sealed": note.sealed,
        "size": note.size,
        "inode": note.inode,
        "raw_bytes": note.raw_bytes,
        "records": note.records,
        "inputs": {n: [f.kind, f.size, f.inode] for n, f in sorted(note.inputs.items())},
    }
    path = folder / f"{note.session}{_SEP}{note.sealed}.json"
    tmp = folder / f".{secrets.token_hex(6)}.tmp"
    tmp.write_bytes(orjson.dumps(body))
    os.replace(tmp, path)


def read_notes(store_path: Path) -> dict[str, dict[str, SealNote]]:
    """Every note, by session and sealed file name: one listing when there are none."""
    folder = notes_dir(store_path)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    out: dict[str, dict[str, SealNote]] = {}
    for name in names:
        if not name.endswith(".json") or _SEP not in name:
            continue
        note = _parse(folder / name)
        if note is None or f"{note.session}{_SEP}{note.sealed}.json" != name:
            with contextlib.suppress(OSError):
                (folder / name).unlink()  # unreadable or misnamed: worth nothing, so gone
            continue
        out.setdefault(note.session, {})[note.sealed] = note
    return out


def _parse(path: Path) -> SealNote | None:
    try:
        d = orjson.loads(path.read_bytes())
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
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return note if SEALED_RE.fullmatch(note.sealed) else None


def remove_notes(store_path: Path, notes: Iterable[SealNote]) -> None:
    folder = notes_dir(store_path)
    for note in notes:
        with contextlib.suppress(FileNotFoundError):
            (folder / f"{note.session}{_SEP}{note.sealed}.json").unlink()
