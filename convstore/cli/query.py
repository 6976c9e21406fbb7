"""Commands that query the store: search, sql, stats."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from enum import Enum
from typing import Annotated, Any

import typer
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..wording import plural
from ._common import (
    JsonOpt,
    OrgOpt,
    SinceOpt,
    StoreOpt,
    UntilOpt,
    UserOpt,
    check_role_given,
    check_session_id,
    complete_session,
    human_time,
    jsonable,
    open_store,
    out,
    print_json,
)

PANEL = "Query"
# Snippets mark matches between « and » (convstore.search); shown in bold yellow.
_MARK = re.compile("\u00ab(.*?)\u00bb", re.DOTALL)


class SqlFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def search(
    ctx: typer.Context,
    query: Annotated[
        str,
        typer.Argument(help='Words, "a phrase", AND/OR/NOT, prefix*, role:user (any language).'),
    ],
    session_id: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-s",
            metavar="SESSION",
            help="Only this session.",
            autocompletion=complete_session,
            callback=check_session_id,
        ),
    ] = None,
    user: UserOpt = None,
    org: OrgOpt = None,
    role: Annotated[
        str | None,
        typer.Option("--role", "-r", callback=check_role_given, help="Only this role."),
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many hits.")
    ] = 20,
    newest: Annotated[
        bool, typer.Option("--newest", help="Newest first instead of best match first.")
    ] = False,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Full-text search over every message, best matches first, with highlighted snippets."""
    with open_store(ctx, store) as s:
        hits = s.search(
            query,
            session_id=session_id,
            user_id=user,
            org_id=org,
            role=role,
            since=since,
            until=until,
            limit=limit,
            order="newest" if newest else "relevance",
        )
        found = [hit_dict(h) for h in hits]
        titles = {} if json else {sid: s.session(sid).title for sid in _live(s, found)}
    if json:
        print_json(found)
        return
    if not found:
        out().print(f"No messages match {query!r}.")
        return
    console = out()
    console.print(render_hits(found, titles, marks=not console.is_terminal))


def _live(store: Any, hits: Sequence[Mapping[str, Any]]) -> list[str]:
    """The hits' sessions that still exist (one may be deleted since it was indexed)."""
    return [sid for sid in dict.fromkeys(str(h["session_id"]) for h in hits) if sid in store]


def hit_dict(hit: Any) -> dict[str, Any]:
    """A search hit as the documented object, whatever form the query layer returns it in."""
    d = jsonable(hit)
    if not isinstance(d, dict):
        raise TypeError(f"unexpected search hit {hit!r}")
    return {
        "session_id": d.get("session_id"),
        "message_id": d.get("message_id"),
        "role": d.get("role"),
        "created_at": d.get("created_at"),
        "score": d.get("score"),
        "snippet": d.get("snippet", ""),
    }


def highlight(snippet: str) -> Text:
    text = Text()
    pos = 0
    for m in _MARK.finditer(snippet):
        text.append(snippet[pos : m.start()])
        text.append(m.group(1), style="bold yellow")
        pos = m.end()
    text.append(snippet[pos:])
    return text


def render_hits(
    hits: Sequence[Mapping[str, Any]], titles: Mapping[str, str | None], *, marks: bool = False
) -> RenderableType:
    """Hits as a header line and an indented snippet. ``marks`` keeps the « » around matches
    (for piped output, where bold does not show)."""
    items: list[RenderableType] = []
    for h in hits:
        head = Text()
        head.append(str(h["session_id"]), style="cyan")
        title = titles.get(str(h["session_id"]))
        if title:
            head.append(f"  {title}", style="bold")
        head.append(f"  {h['role']}", style="green")
        head.append(f"  {human_time(h['created_at'])}", style="dim")
        head.append(f"  {h['message_id']}", style="dim")
        snippet = " ".join(str(h["snippet"]).split())
        body = Text(snippet) if marks else highlight(snippet)
        items.append(Group(head, Text("  ").append_text(body), Text("")))
    return Group(*items)


def sql(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="A DuckDB SQL query (tables in docs/CLI.md).")],
    format: Annotated[
        SqlFormat, typer.Option("--format", "-f", help="table, csv or json.")
    ] = SqlFormat.table,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Run SQL over every session (tables: sessions, messages, states, checkpoints)."""
    fmt = SqlFormat.json if json else format
    with open_store(ctx, store) as s:
        columns, rows = table_of(s.sql(query))
    if fmt is SqlFormat.json:
        print_json([dict(zip(columns, r, strict=True)) for r in rows])
    elif fmt is SqlFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_csv_cell(v) for v in jsonable(list(r))])
    else:
        table = Table(header_style="bold", box=None, pad_edge=False)
        for i, c in enumerate(columns):
            first = next((r[i] for r in rows if r[i] is not None), None)
            table.add_column(c, justify="right" if _numeric(first) else "left")
        for r in rows:
            table.add_row(*[_cell(v) for v in r])
        out().print(table)
        out().print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/]")


def table_of(result: Any) -> tuple[list[str], list[Sequence[Any]]]:
    """Column names and rows from what ``Store.sql`` returns."""
    for names in ("columns", "column_names"):
        cols = getattr(result, names, None)
        if cols is not None and not callable(cols):
            break
    else:
        cols = None
    if cols is not None and hasattr(result, "rows"):
        rows = result.rows() if callable(result.rows) else result.rows
        return [str(c) for c in cols], [tuple(r) for r in rows]
    if hasattr(result, "to_pylist") and cols is not None:
        data = result.to_pylist()
        return [str(c) for c in cols], [tuple(d[c] for c in cols) for d in data]
    if hasattr(result, "fetchall") and hasattr(result, "description"):
        rows = result.fetchall()
        return [d[0] for d in result.description], [tuple(r) for r in rows]
    if isinstance(result, list):
        if result and isinstance(result[0], Mapping):
            keys = list(result[0])
            return keys, [tuple(r[k] for k in keys) for r in result]
        return [f"column{i}" for i in range(len(result[0]) if result else 0)], result
    raise TypeError(f"cannot read a table from {type(result).__name__}")


def _cell(value: Any) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    v = jsonable(value)
    if isinstance(v, (dict, list)):
        import json

        v = json.dumps(v, ensure_ascii=False)
    return Text(str(v))


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, ensure_ascii=False)
    return value


def stats(
    ctx: typer.Context,
    user: UserOpt = None,
    org: OrgOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Statistics: sessions, messages by role, lengths, activity, models, tokens, storage."""
    with open_store(ctx, store) as s:
        result = jsonable(s.stats(user_id=user, org_id=org, since=since, until=until))
    if json:
        print_json(result)
        return
    out().print(render_stats(result))


def render_stats(d: Mapping[str, Any]) -> RenderableType:
    """The statistics as a few small tables; keys this does not know are listed at the end."""
    parts: list[RenderableType] = []
    known: set[str] = set()

    def take(key: str) -> Any:
        known.add(key)
        return d.get(key)

    head = Text()
    sessions, messages = take("sessions"), take("messages")
    head.append(plural(sessions, "session", _fmt(sessions)), style="bold")
    head.append(" · ")
    head.append(plural(messages, "message", _fmt(messages)), style="bold")
    first, last = take("first_message_at"), take("last_message_at")
    if first:
        head.append(f" · {human_time(first)} → {human_time(last)} UTC", style="dim")
    since, until = take("since"), take("until")
    if since or until:
        window = f"{human_time(since) if since else '…'} → {human_time(until) if until else '…'}"
        head.append(f"\nwindow: {window} UTC", style="cyan")
    parts.append(head)

    small: list[RenderableType] = []
    by_role = take("messages_by_role") or {}
    if by_role:
        small.append(_pairs("By role", sorted(by_role.items(), key=lambda kv: -kv[1])))
    length = take("session_length") or {}
    if length:
        small.append(_pairs("Session length", list(length.items())))
    models = take("models") or {}
    if models:
        top = sorted(models.items(), key=lambda kv: -kv[1])[:8]
        small.append(_pairs("Answers by model", top))
    if small:
        parts.append(Text(""))
        parts.append(Columns(small, padding=(0, 4)))
        parts.append(Text(""))

    per_day = take("messages_per_day") or {}
    if per_day:
        parts.extend([_activity(per_day), Text("")])
    take("messages_by_hour")
    hours = take("busiest_hours") or []
    if hours:
        parts.append(Text("Busiest hours (UTC): " + ", ".join(f"{h:02d}h" for h in hours[:6])))
    tokens = take("tokens") or {}
    if tokens and tokens.get("total"):
        parts.append(
            Text(
                f"Tokens: {_fmt(tokens.get('input'))} in · {_fmt(tokens.get('output'))} out"
                f" · {_fmt(tokens.get('total'))} total"
            )
        )
    take("tokens_by_model")
    terms = take("top_terms") or []
    take("terms_sampled")
    if terms:
        parts.append(Text("Top terms: " + ", ".join(f"{t} ({n:,})" for t, n in terms[:10])))
    storage = take("storage") or {}
    if storage:
        files = storage.get("files")
        parts.append(
            Text(
                f"Storage: {_size(storage.get('raw_bytes'))} of records in "
                f"{_size(storage.get('disk_bytes'))} on disk ({storage.get('ratio', 0):.1f}x), "
                f"{plural(int(files or 0), 'file', _fmt(files))}",
                style="dim",
            )
        )
    rest = [(k, v) for k, v in d.items() if k not in known]
    if rest:
        parts.extend([Text(""), _pairs("Other", [(k, v) for k, v in rest])])
    return Group(*parts)


def _pairs(title: str, items: Sequence[tuple[Any, Any]]) -> RenderableType:
    t = Table(box=None, pad_edge=False, show_header=False)
    t.add_column(no_wrap=True)
    t.add_column(justify="right", no_wrap=True)
    for k, v in items:
        t.add_row(_label(str(k)), _fmt(v))
    return Group(Text(title, style="bold"), t)


def _activity(per_day: Mapping[str, int]) -> RenderableType:
    """Messages per day as bars: by day up to two weeks, by week up to four months, else by
    month, so the chart stays short."""
    days = {date.fromisoformat(k): int(v) for k, v in per_day.items()}
    span = (max(days) - min(days)).days + 1 if days else 0
    title = "day" if span <= 14 else "week" if span <= 120 else "month"
    buckets: dict[str, int] = {}
    for day in sorted(days):
        label = _bucket(day, title)
        buckets[label] = buckets.get(label, 0) + days[day]
    title = f"Messages per {title}"
    t = Table(box=None, pad_edge=False, show_header=False)
    t.add_column(no_wrap=True)
    t.add_column(justify="right", no_wrap=True)
    t.add_column(no_wrap=True)
    top = max(buckets.values(), default=0) or 1
    for label, n in buckets.items():
        t.add_row(label, f"{n:,}", Text("█" * max(1, round(30 * n / top)), style="blue"))
    return Group(Text(title, style="bold"), t)


def _bucket(day: date, unit: str) -> str:
    if unit == "day":
        return day.isoformat()
    if unit == "week":
        return f"week of {(day - timedelta(days=day.weekday())).isoformat()}"
    return day.isoformat()[:7]


def _size(n: Any) -> str:
    value = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"


def _label(key: str) -> str:
    return key.replace("_", " ")


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if v is not None else "-"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


def register(app: typer.Typer) -> None:
    for fn in (search, sql, stats):
        app.command(rich_help_panel=PANEL)(fn)
