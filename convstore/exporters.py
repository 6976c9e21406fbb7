"""Export sessions: JSON (lossless, re-importable), JSONL, CSV, Markdown and Parquet.

The JSON export is convstore's interchange format (``docs/CLI.md`` defines it field by field)::

    {"format": "convstore-export", "version": 1, "exported_at": "...Z",
     "sessions": [{"id", "title", "user_id", "org_id", "agent_id", "metadata", "created_at",
                   "parent", "state"?, "messages": [{"id", "role", "content", "metadata",
                                                     "created_at", "edited_at"}]}]}

It is deterministic: sessions in (created_at, id) order, messages in the order the session
shows them, one message per line, and ``exported_at`` is the newest time the file holds (not
the wall clock). Exporting, importing the file into an empty store and exporting again
therefore gives the same bytes. A branch holds only its own messages and names its parent;
exporting a branch brings its ancestors along, so the file always imports on its own. A branch
whose parent was deleted is exported as a plain session holding every message it shows.

JSONL, CSV and Parquet hold one row per stored message (a branch's inherited messages stay
with their own session, so nothing is counted twice), with the same columns in all three.
Markdown is a transcript for people: each session as it reads, inherited messages included.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .dates import When
from .errors import InvalidInput
from .ids import format_us, parse_us, to_us
from .importers import EXPORT_FORMAT, EXPORT_VERSION
from .layout import create_file, fsync_dir
from .records import Content, JSONDict, Message, encode_json
from .session import Session
from .store import Store

EXPORT_FORMATS = ("json", "jsonl", "csv", "markdown", "parquet")
COLUMNS = (
    "session_id",
    "session_title",
    "user_id",
    "org_id",
    "agent_id",
    "message_id",
    "role",
    "created_at",
    "edited_at",
    "text",
    "content",
    "metadata",
)
EPOCH = "1970-01-01T00:00:00.000000Z"
_SPOOL_BYTES = 8 * 1024 * 1024
_COPY_CHARS = 1024 * 1024
_ROW_GROUP = 50_000

Progress = Callable[[int, int], None]


class TextSink(Protocol):
    """Where text exports go: an open text file, sys.stdout, a StringIO."""

    def write(self, s: str, /) -> int: ...


@dataclass
class ExportReport:
    """What an export wrote."""

    format: str
    path: str | None
    sessions: list[str] = field(default_factory=list)
    messages: int = 0
    bytes: int = 0

    def to_dict(self) -> JSONDict:
        return {
            "format": self.format,
            "path": self.path,
            "sessions": len(self.sessions),
            "messages": self.messages,
            "bytes": self.bytes,
        }


def select_sessions(
    store: Store,
    session_ids: Sequence[str] = (),
    *,
    user_id: str | None = None,
    org_id: str | None = None,
    since: When | None = None,
    until: When | None = None,
) -> list[Session]:
    """The sessions to export: the given ids, else every session matching the filters.

    Filters narrow the given ids too; ``since``/``until`` bound a session's last activity, as
    in ``Store.sessions``. The result is in (created_at, id) order, which makes exports stable.
    """
    if session_ids:
        chosen = [store.session(sid) for sid in dict.fromkeys(session_ids)]
        if user_id is not None or org_id is not None or since is not None or until is not None:
            keep = {
                s.id
                for s in store.sessions(user_id=user_id, org_id=org_id, since=since, until=until)
            }
            chosen = [s for s in chosen if s.id in keep]
    else:
        chosen = store.sessions(user_id=user_id, org_id=org_id, since=since, until=until)
    return sorted(chosen, key=_order)


def _order(s: Session) -> tuple[str, str]:
    return (str(s.info()["created_at"]), s.id)


def with_ancestors(store: Store, sessions: Sequence[Session]) -> list[Session]:
    """``sessions`` plus the sessions they branch from, in (created_at, id) order."""
    out = {s.id: s for s in sessions}
    todo = list(sessions)
    while todo:
        parent = todo.pop().parent
        if parent is not None and parent[0] not in out and parent[0] in store:
            p = store.session(parent[0])
            out[p.id] = p
            todo.append(p)
    return sorted(out.values(), key=_order)


def own_messages(session: Session) -> list[Message]:
    """The messages stored in this session (a branch's inherited ones left out)."""
    return [m for m in session.messages() if m.session_id == session.id]


# -- JSON ------------------------------------------------------------------------------------


def session_document(session: Session) -> tuple[JSONDict, list[JSONDict]]:
    """A session's export head (every field but its messages) and its messages."""
    info = session.info()
    head: JSONDict = {
        "id": info["id"],
        "title": info["title"],
        "user_id": info["user_id"],
        "org_id": info["org_id"],
        "agent_id": info["agent_id"],
        "metadata": info["metadata"],
        "created_at": info["created_at"],
        "parent": info["parent"],
    }
    own = own_messages(session)
    if info["parent"] is not None and info["parent"]["session"] not in session.store:
        # The parent was deleted, yet the branch still shows what it inherited. The file
        # cannot name a parent it does not hold (import would refuse it), and exporting the
        # deleted session would bring it back: the branch gets that history as its own.
        head["parent"] = None
        own = session.messages()
        if own:  # the session starts with what it inherited, as it will once imported
            head["created_at"] = min(str(head["created_at"]), format_us(to_us(own[0].created_at)))
    history = session.state_history(limit=1)
    if history:
        entry = history[0]
        head["state"] = {
            "id": entry.id,
            "created_at": format_us(to_us(entry.created_at)),
            "value": entry.state,
        }
    return head, [m.to_dict() for m in own]


def _newest(head: JSONDict, messages: list[JSONDict]) -> str:
    times = [str(head["created_at"])]
    if "state" in head:
        times.append(str(head["state"]["created_at"]))
    for m in messages:
        times.append(str(m["created_at"]))
        if m["edited_at"]:
            times.append(str(m["edited_at"]))
    return max(times)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_json(sessions: Sequence[Session], out: TextSink, progress: Progress | None = None) -> int:
    """Write the export document; returns the number of messages.

    ``exported_at`` sits at the top but is the newest time of the whole file, so the sessions
    are written to a spooled temporary file first (memory up to a few MiB, then disk) and
    copied after the header: each session is read once and never all held at the same time.
    """
    count = 0
    newest = EPOCH
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8") as body:
        for i, s in enumerate(sessions):
            head, messages = session_document(s)
            newest = max(newest, _newest(head, messages))
            body.write(",\n  " if i else "\n  ")
            body.write(_dumps(head)[:-1] + ', "messages": [')
            if messages:
                body.write("\n" + ",\n".join("   " + _dumps(m) for m in messages) + "\n  ]}")
            else:
                body.write("]}")
            count += len(messages)
            if progress is not None:
                progress(i + 1, len(sessions))
        out.write(
            f'{{"format": {_dumps(EXPORT_FORMAT)}, "version": {EXPORT_VERSION}, '
            f'"exported_at": {_dumps(newest)},\n "sessions": ['
        )
        body.seek(0)
        while chunk := body.read(_COPY_CHARS):
            out.write(chunk)
    out.write("\n ]}\n" if sessions else "]}\n")
    return count


# -- rows: JSONL, CSV, Parquet ---------------------------------------------------------------


def rows(sessions: Iterable[Session], progress: Progress | None = None) -> Iterator[JSONDict]:
    """One row per stored message, with the session's labels (the columns of ``COLUMNS``)."""
    sessions = list(sessions)
    for i, s in enumerate(sessions, 1):
        info = s.info()
        for m in own_messages(s):
            d = m.to_dict()
            yield {
                "session_id": s.id,
                "session_title": info["title"],
                "user_id": info["user_id"],
                "org_id": info["org_id"],
                "agent_id": info["agent_id"],
                "message_id": m.id,
                "role": m.role,
                "created_at": d["created_at"],
                "edited_at": d["edited_at"],
                "text": m.text,
                "content": m.content,
                "metadata": m.metadata,
            }
        if progress is not None:
            progress(i, len(sessions))


def write_jsonl(
    sessions: Sequence[Session], out: TextSink, progress: Progress | None = None
) -> int:
    n = 0
    for row in rows(sessions, progress):
        out.write(_dumps(row) + "\n")
        n += 1
    return n


def write_csv(sessions: Sequence[Session], out: TextSink, progress: Progress | None = None) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for row in rows(sessions, progress):
        if not isinstance(row["content"], str):
            row["content"] = encode_json(row["content"])
        row["metadata"] = encode_json(row["metadata"])
        writer.writerow([row[c] for c in COLUMNS])
        n += 1
    return n


def write_parquet(sessions: Sequence[Session], path: Path, progress: Progress | None = None) -> int:
    """The rows as Parquet (zstd), written in row groups so memory stays bounded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = pa.timestamp("us", tz="UTC")
    schema = pa.schema(
        [(c, ts if c in ("created_at", "edited_at") else pa.string()) for c in COLUMNS]
    )
    count = 0
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for row in rows(sessions, progress):
            for c in COLUMNS:
                value = row[c]
                if c in ("content", "metadata"):
                    value = encode_json(value)
                elif c in ("created_at", "edited_at") and value is not None:
                    value = parse_us(value)
                cols[c].append(value)
            count += 1
            if len(cols["message_id"]) >= _ROW_GROUP:
                writer.write_table(pa.table(cols, schema=schema))
                cols = {c: [] for c in COLUMNS}
        if cols["message_id"] or not count:
            writer.write_table(pa.table(cols, schema=schema))
    return count


# -- Markdown --------------------------------------------------------------------------------


def content_markdown(content: Content) -> str:
    """A message's content as Markdown: text as is, images as images, tools as code blocks."""
    if isinstance(content, str):
        return content
    out: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            text = str(part.get("text", ""))
            if part.get("thinking"):
                label = f"thinking: {part['summary']}" if part.get("summary") else "thinking"
                out.append(
                    "\n".join(
                        f"> {line}" if line else ">" for line in [f"*{label}*", *text.splitlines()]
                    )
                )
            elif part.get("attachment"):
                out.append(f"**attachment: {part['attachment']}**\n\n```\n{text}\n```")
            else:
                out.append(text)
        elif kind == "image":
            out.append(f"![image]({part.get('url') or part.get('path')})")
        elif kind == "tool_call":
            args = part.get("arguments")
            body = json.dumps(args, ensure_ascii=False, indent=2) if args is not None else ""
            head = f"**tool call** `{part.get('name')}` (id `{part.get('id')}`)"
            out.append(f"{head}\n\n```json\n{body}\n```")
        elif kind == "tool_result":
            inner = part.get("content")
            text = inner if isinstance(inner, str) else content_markdown(inner or [])
            out.append(f"**tool result** (call `{part.get('tool_call_id')}`)\n\n```\n{text}\n```")
    return "\n\n".join(out)


def session_markdown(session: Session, messages: Sequence[Message] | None = None) -> str:
    """A session as a Markdown transcript (``messages`` defaults to all of them)."""
    info = session.info()
    lines = [f"# {info['title'] or info['id']}", ""]
    facts = [f"session `{info['id']}`"]
    for key in ("user_id", "org_id", "agent_id"):
        if info[key]:
            facts.append(f"{key.removesuffix('_id')} `{info[key]}`")
    facts.append(f"created {_human_time(str(info['created_at']))}")
    lines.append(" · ".join(facts))
    if info["parent"]:
        p = info["parent"]
        lines.append(f"\nBranched from `{p['session']}` at message `{p['message']}`.")
    lines.append("")
    for m in session.messages() if messages is None else messages:
        d = m.to_dict()
        head = f"## {m.role} · {_human_time(str(d['created_at']))}"
        if d["edited_at"]:
            head += f" · edited {_human_time(str(d['edited_at']))}"
        lines.extend([head, "", content_markdown(m.content), ""])
    return "\n".join(lines)


def _human_time(iso: str) -> str:
    return f"{iso[:10]} {iso[11:19]} UTC"


def write_markdown(
    sessions: Sequence[Session], out: TextSink, progress: Progress | None = None
) -> int:
    n = 0
    for i, s in enumerate(sessions):
        if i:
            out.write("\n---\n\n")
        messages = s.messages()
        out.write(session_markdown(s, messages))
        n += len(messages)
        if progress is not None:
            progress(i + 1, len(sessions))
    return n


# -- the entry point -------------------------------------------------------------------------


def export(
    store: Store,
    sessions: Sequence[Session],
    format: str,
    path: str | os.PathLike[str] | None = None,
    *,
    stdout: TextSink | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Export ``sessions`` to ``path`` (written atomically) or to ``stdout``."""
    if format not in EXPORT_FORMATS:
        raise InvalidInput(f"export format {format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if format == "json":
        sessions = with_ancestors(store, sessions)
    report = ExportReport(format, None if path is None else str(path), [s.id for s in sessions])
    if path is None:
        if format == "parquet":
            raise InvalidInput("Parquet is a binary format: give a file to write it to")
        target = stdout if stdout is not None else io.StringIO()
        counter = _Counting(target)
        report.messages = _WRITERS[format](sessions, counter, progress)
        report.bytes = counter.bytes
        return report
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        # 0600, like the store the conversations come from; pyarrow truncates the file made
        # here and keeps its mode.
        binary = create_file(tmp)
        if format == "parquet":
            binary.close()
            report.messages = write_parquet(sessions, tmp, progress)
        else:
            with io.TextIOWrapper(binary, encoding="utf-8", newline="") as fh:
                report.messages = _WRITERS[format](sessions, fh, progress)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)
    report.bytes = dest.stat().st_size
    return report


class _Counting:
    """Passes text through to ``target`` and counts the UTF-8 bytes."""

    def __init__(self, target: TextSink) -> None:
        self.target = target
        self.bytes = 0

    def write(self, s: str) -> int:
        self.bytes += len(s.encode("utf-8"))
        return self.target.write(s)


_WRITERS: dict[str, Callable[[Sequence[Session], TextSink, Progress | None], int]] = {
    "json": write_json,
    "jsonl": write_jsonl,
    "csv": write_csv,
    "markdown": write_markdown,
}
