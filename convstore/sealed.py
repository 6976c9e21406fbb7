"""Sealed segments: immutable Parquet files named by the SHA-256 of their bytes.

Columns (one row per record, sorted by ``created_at``, ``id``):

=========== ======================= =================================================
column      type                    meaning
=========== ======================= =================================================
id          string                  record id
kind        string                  record kind (``records.py``)
session     string                  session id
created_at  timestamp[us, tz=UTC]   record time
role        string (null)           message role, for messages
text        string (null)           plain text of the message, for analysts
record      string                  the rest of the record, as JSON
=========== ======================= =================================================

A record is the union of its columns and ``record``: the columns ``id``, ``kind``,
``session``, ``created_at`` and ``role`` are not repeated inside ``record``, and neither is a
message's ``content`` when it is a plain string (it is ``text`` then). Storing each message's
text once is what lets a sealed file be smaller than the hot segments it replaces.
Any Parquet reader can query the columns; docs/QUERY.md shows how to rebuild whole records.
"""

from __future__ import annotations

import atexit
import gc
import hashlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from .errors import CorruptData
from .ids import format_us, parse_us
from .layout import SEALED_RE, create_file, fsync_dir, open_read, read_bytes, sealed_name
from .records import content_text, encode_json

COLUMNS = ("id", "kind", "session", "created_at", "role", "text", "record")


def _arrow() -> Any:
    """pyarrow, imported on first use.

    A process that only appends and reads hot segments (most writers) never loads it: importing
    pyarrow costs over 100 ms, and a writer process that had it loaded aborted at exit now and
    then ("terminate called without an active exception") in the reliability suite.
    """
    global _exit_hook
    import pyarrow as pa

    if not _exit_hook:
        # Release Arrow objects while Arrow is still whole: without this, a process exiting
        # with Arrow's pool threads alive sometimes aborts ("terminate called without an
        # active exception", apache/arrow#34314). atexit runs before module teardown.
        atexit.register(gc.collect)
        _exit_hook = True
    return pa


_exit_hook = False


def _schema() -> Any:
    pa = _arrow()
    return pa.schema(
        [
            ("id", pa.string()),
            ("kind", pa.string()),
            ("session", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("role", pa.string()),
            ("text", pa.string()),
            ("record", pa.string()),
        ]
    )


_OWN_COLUMNS = ("id", "kind", "session", "created_at", "role")


def write_sealed(folder: Path, records: Iterable[dict[str, Any]], writer: str) -> Path:
    """Write records as a sealed file of ``writer`` in ``folder``; return its path, named by
    its owner and its content.

    Atomic: a temporary file is written and fsynced, renamed to its name, and the folder
    fsynced. The owner in the name is what keeps git merges clean: only the owner ever removes
    the file, so no two clones can both replace it (FORMAT.md, section 8).
    """
    import pyarrow.parquet as pq

    pa = _arrow()
    rows = sorted(records, key=lambda r: (r["created_at"], r["id"]))
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for r in rows:
        columns["id"].append(r["id"])
        columns["kind"].append(r["kind"])
        columns["session"].append(r["session"])
        columns["created_at"].append(parse_us(r["created_at"]))
        rest = {k: v for k, v in r.items() if k not in _OWN_COLUMNS}
        if r["kind"] == "message":
            columns["role"].append(r["role"])
            content = rest.get("content", "")
            columns["text"].append(content_text(content))
            if isinstance(content, str):
                del rest["content"]  # it is the text column, stored once
        else:
            columns["role"].append(r.get("role"))
            columns["text"].append(None)
        columns["record"].append(encode_json(rest))
    table = pa.table(columns, schema=_schema())
    tmp = folder / f".sealing.{secrets.token_hex(6)}.tmp"
    # Deterministic bytes for identical input: fixed writer options, no creation timestamp
    # that varies between runs (pyarrow writes none), one row group. zstd level 6: on the
    # benchmark's chat (100k messages in 2,000 sealed files) it writes 2.8% fewer bytes than
    # level 3 for 1.5x the time (level 9: 3.6% fewer, 1.9x the time); sealing runs in the
    # background, so the bytes, which are kept and synced for good, win. Statistics only where
    # filters use them.
    # Our own descriptor, not a path: pyarrow would create the file 0666 less the umask, and
    # follow a link.
    with create_file(tmp) as out:
        pq.write_table(
            table,
            out,
            compression="zstd",
            compression_level=6,
            use_dictionary=["kind", "session", "role"],
            write_statistics=["id", "kind", "session", "created_at", "role"],
            store_schema=False,
            row_group_size=max(1, len(rows)),
            write_page_checksum=True,
        )
        out.flush()
        os.fsync(out.fileno())
    digest = file_digest(tmp)
    final = folder / sealed_name(writer, digest)
    os.replace(tmp, final)
    fsync_dir(folder)
    return final


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open_read(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sealed(path: Path, *, verify: bool = True) -> list[dict[str, Any]]:
    """The records of a sealed file.

    ``verify`` (the default) checks the bytes against the SHA-256 in the name before trusting
    them: the name is the contract of a sealed file, and a flipped bit in the ``record`` column
    would otherwise be served as an altered record. The file is read once for both.
    A missing file raises FileNotFoundError (a compaction may have just replaced it).
    """
    import pyarrow.parquet as pq

    pa = _arrow()
    m = SEALED_RE.fullmatch(path.name)
    data = read_bytes(path)
    if verify and (m is None or hashlib.sha256(data).hexdigest() != m.group(2)):
        raise CorruptData(f"{path} does not match its content hash; restore it from git or a clone")
    try:
        # No Arrow threads: use_threads=False and pre_buffer=False (pre-buffering runs on
        # Arrow's IO pool). They gain nothing on one in-memory file, and a process exiting
        # while those pool threads were alive aborted ("terminate called without an active
        # exception", apache/arrow#34314) in the reliability suite.
        table = pq.read_table(
            pa.BufferReader(data),
            columns=list(COLUMNS),
            page_checksum_verification=True,
            use_threads=False,
            pre_buffer=False,
        )
        stamps = table.column("created_at").cast(pa.int64()).to_pylist()
        records = []
        for rid, kind, sid, at, role, text, rest in zip(
            table.column("id").to_pylist(),
            table.column("kind").to_pylist(),
            table.column("session").to_pylist(),
            stamps,
            table.column("role").to_pylist(),
            table.column("text").to_pylist(),
            table.column("record").to_pylist(),
            strict=True,
        ):
            r: dict[str, Any] = {"id": rid, "kind": kind, "session": sid}
            r["created_at"] = format_us(at)
            if role is not None:
                r["role"] = role
            r.update(orjson.loads(rest))
            if kind == "message" and "content" not in r:
                r["content"] = text
            records.append(r)
        return records
    except (OSError, ValueError, TypeError, pa.ArrowException) as e:
        raise CorruptData(f"{path} is not a readable sealed file: {e}") from None
