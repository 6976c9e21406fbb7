"""Commands that query the store: search, sql, stats."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ._common import (
    JsonOpt,
    OrgOpt,
    SinceOpt,
    StoreOpt,
    UntilOpt,
    UserOpt,
    complete_session,
    human_time,
    jsonable,
    open_store,
    out,
    print_json,
)

PANEL = "Query"
# Snippets mark matches as <b>...</b> (tantivy's highlighter); shown in bold yellow.
_MARK = re.compile(r"<b>(.*?)</b>", re.DOTALL)


class SqlFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def search(
    ctx: typer.Context,
    query: Annotated[
        str,
        typer.Argument(help='Words, "a phrase", AND/OR/NOT, prefix* (stemmed English matching).'),
    ],
    session_id: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-s",
            metavar="SESSION",
            help="Only this session.",
            autocompletion=complete_session,
        ),
    ] = None,
    user: UserOpt = None,
    org: OrgOpt = None,
    role: Annotated[str | None, typer.Option("--role", "-r", help="Only this role.")] = None,
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
    if json:
        print_json(found)
        return
    if not found:
        out().print(f"No messages match {query!r}.")
        return
    out().print(render_hits(found))


def hit_dict(hit: Any) -> dict[str, Any]:
    """A search hit as the documented object, whatever form the query layer returns it in."""
    d = jsonable(hit)
    if not isinstance(d, dict):
        raise TypeError(f"unexpected search hit {hit!r}")
    return {
        "session_id": d.get("session_id", d.get("session")),
        "message_id": d.get("message_id", d.get("id")),
        "role": d.get("role"),
        "created_at": d.get("created_at"),
        "score": d.get("score"),
        "snippet": d.get("snippet", ""),
        **{k: v for k, v in d.items() if k in ("title", "user_id", "org_id")},
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


def render_hits(hits: Sequence[Mapping[str, Any]]) -> RenderableType:
    items: list[RenderableType] = []
    for h in hits:
        head = Text()
        head.append(str(h["session_id"]), style="cyan")
        if h.get("title"):
            head.append(f"  {h['title']}", style="bold")
        head.append(f"  {h['role']}", style="green")
        head.append(f"  {human_time(h['created_at'])}", style="dim")
        head.append(f"  {h['message_id']}", style="dim")
        snippet = " ".join(str(h["snippet"]).split())
        items.append(Group(head, Text("  ").append_text(highlight(snippet)), Text("")))
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
        for c in columns:
            table.add_column(c)
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


def render_stats(result: Mapping[str, Any]) -> RenderableType:
    """Scalars in one table, then one small table per mapping or list of rows."""
    parts: list[RenderableType] = []
    main = Table(box=None, show_header=False, pad_edge=False)
    main.add_column(style="bold")
    main.add_column(justify="right")
    for key, value in result.items():
        if not isinstance(value, (dict, list)):
            main.add_row(_label(key), _fmt(value))
    parts.append(main)
    for key, value in result.items():
        if isinstance(value, dict) and value:
            t = Table(title=_label(key), title_justify="left", box=None, pad_edge=False)
            t.add_column("", style="bold")
            t.add_column("", justify="right")
            for k, v in value.items():
                t.add_row(str(k), _fmt(v))
            parts.extend([Text(""), t])
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            t = Table(title=_label(key), title_justify="left", box=None, pad_edge=False)
            cols = list(value[0])
            for c in cols:
                t.add_column(c, justify="right" if _numeric(value[0][c]) else "left")
            for row in value[:15]:
                t.add_row(*[_fmt(row.get(c)) for c in cols])
            if len(value) > 15:
                t.caption = f"... {len(value) - 15} more (see --json)"
            parts.extend([Text(""), t])
        elif isinstance(value, list) and value:
            parts.extend([Text(""), Text(f"{_label(key)}: " + ", ".join(map(str, value[:20])))])
    return Group(*parts)


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
