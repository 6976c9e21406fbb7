"""The cold build: every session replayed into rows for a new catalog base and search index.

Replaying a session (``view.SessionView``: decompress, parse, validate, apply every record)
costs about 48 s per million messages on one core, more than the catalog and the index
together. So for a large store the replay runs in worker processes, a few chunks of sessions
ahead of the main process, which meanwhile writes the rows into DuckDB and the documents into
tantivy (whose indexing threads run beside it). A small store is replayed in-process.

A worker is ``python -m convstore.rebuild SESSIONS_DIR``: it reads one JSON list of session ids
per line on stdin and answers each with one Arrow IPC stream per table, each prefixed by its
length (8 bytes, little-endian); a length of 2**64-1 announces an error, whose text follows
the same way. Not ``multiprocessing``: its spawned children import the caller's ``__main__``,
which re-runs a script that lacks an ``if __name__ == "__main__"`` guard, and a fork would copy
the DuckDB and tantivy threads' locks in whatever state they are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from .catalog import TABLES, BaseBuilder
from .errors import ConvstoreError
from .ingest import TrackingView, all_rows
from .search import document_from

# Below this many session folders a build stays in one process.
PARALLEL_FROM = 400
CHUNK_SESSIONS = 100


def replay(sessions_dir: str, sids: list[str]) -> dict[str, bytes]:
    """Rows of every table for these sessions, as Arrow IPC streams (runs in a worker)."""
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    titles: list[str | None] = []
    for sid in sids:
        view = TrackingView(sid, Path(sessions_dir) / sid)
        view.refresh()
        got = all_rows(view)
        for table, table_rows in got.items():
            rows[table].extend(table_rows)
        titles.extend([view.field("title")] * len(got["messages"]))
    out = {}
    for table, table_rows in rows.items():
        arrow = pa.Table.from_pylist(table_rows, schema=TABLES[table].schema)
        if table == "messages":
            arrow = arrow.append_column("_title", pa.array(titles, pa.string()))
        out[table] = _ipc(arrow)
    return out


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _read_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


_ERROR = 2**64 - 1


def _write_frame(out: IO[bytes], blob: bytes, length: int | None = None) -> None:
    out.write((len(blob) if length is None else length).to_bytes(8, "little"))
    out.write(blob)


def _read_frame(src: IO[bytes]) -> tuple[int, bytes]:
    head = src.read(8)
    if len(head) != 8:
        raise ConvstoreError("a cache build worker stopped unexpectedly; run reindex again")
    n = int.from_bytes(head, "little")
    if n == _ERROR:
        _, text = _read_frame(src)
        raise ConvstoreError(f"a cache build worker failed: {text.decode(errors='replace')}")
    data = src.read(n)
    if len(data) != n:
        raise ConvstoreError("a cache build worker stopped mid-answer; run reindex again")
    return n, data


def serve(sessions_dir: str) -> None:
    """The worker loop (``python -m convstore.rebuild SESSIONS_DIR``)."""
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            result = replay(sessions_dir, json.loads(line))
        except Exception as e:  # reported to the main process, which stops the build
            _write_frame(out, b"", _ERROR)
            _write_frame(out, f"{type(e).__name__}: {e}".encode())
            out.flush()
            continue
        for table in TABLES:
            _write_frame(out, result[table])
        out.flush()


class _Worker:
    def __init__(self, sessions_dir: Path) -> None:
        import convstore

        env = dict(os.environ)
        # The worker must import this very convstore, wherever it was imported from.
        root = str(Path(convstore.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "convstore.rebuild", str(sessions_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def send(self, sids: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(sids).encode() + b"\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, bytes]:
        assert self.proc.stdout is not None
        return {table: _read_frame(self.proc.stdout)[1] for table in TABLES}

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _results(sessions_dir: Path, names: list[str]) -> Iterator[tuple[int, dict[str, bytes]]]:
    """(sessions done, rows) per chunk, in order: from worker processes for a large store."""
    chunks = [names[i : i + CHUNK_SESSIONS] for i in range(0, len(names), CHUNK_SESSIONS)]
    count = min(os.cpu_count() or 1, 4, len(chunks))
    if len(names) < PARALLEL_FROM or count < 2:
        for done, sid in enumerate(names, 1):
            yield done, replay(str(sessions_dir), [sid])
        return
    workers = [_Worker(sessions_dir) for _ in range(count)]
    try:
        # Chunk i goes to worker i % count, which answers in order, so answers are read in
        # chunk order. At most two chunks per worker are in flight: the main process sets the
        # pace, and memory stays bounded however large the store.
        queue: deque[int] = deque()
        sent = 0
        while sent < len(chunks) and sent < 2 * count:
            workers[sent % count].send(chunks[sent])
            queue.append(sent)
            sent += 1
        done = 0
        while queue:
            i = queue.popleft()
            result = workers[i % count].receive()
            if sent < len(chunks):
                workers[sent % count].send(chunks[sent])
                queue.append(sent)
                sent += 1
            done += len(chunks[i])
            yield done, result
    finally:
        for w in workers:
            w.close()


def build(
    sessions_dir: Path,
    names: list[str],
    builder: BaseBuilder,
    writer: Any,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Fill ``builder`` (the new base) and ``writer`` (the new index) from every session."""
    for done, result in _results(sessions_dir, names):
        for table, data in result.items():
            arrow = _read_ipc(data)
            if table == "messages":
                _index(writer, arrow)
                arrow = arrow.drop_columns(["_title"])
            builder.add_arrow(table, arrow)
        if progress is not None:
            progress(done, len(names))


def _index(writer: Any, messages: pa.Table) -> None:
    if not messages.num_rows:
        return
    created = messages.column("created_at").cast(pa.int64()).to_pylist()
    columns = [
        messages.column(name).to_pylist()
        for name in ("id", "session_id", "role", "user_id", "org_id", "_title", "text")
    ]
    for (mid, sid, role, user, org, title, text), at in zip(
        zip(*columns, strict=True), created, strict=True
    ):
        writer.add_document(document_from(mid, sid, role, user, org, title, at, text))


if __name__ == "__main__":
    serve(sys.argv[1])
