"""Commands on sessions: init, new, ls, rm, branch, merge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .. import layout
from ..ids import validate_session_id
from ..session import _check_label
from ..store import Store, check_merge_sources
from ._common import (
    JsonOpt,
    MetaOpt,
    OrgOpt,
    SessionArg,
    SinceOpt,
    StoreOpt,
    UntilOpt,
    UserOpt,
    check_new_session_id,
    check_org,
    check_title,
    check_user,
    complete_session,
    err,
    human_time,
    open_store,
    out,
    parse_meta,
    print_json,
    store_path,
    usage_check,
)

PANEL = "Sessions"


def init(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Argument(metavar="[DIR]", help="Where to make it (default: --store).")
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Create an empty store (a folder), or check that DIR already is one."""
    path = directory.expanduser() if directory is not None else store_path(ctx, store)
    existed = (path / layout.MARKER).exists()
    with Store(path) as s:
        version = layout.read_marker(s.path)
    if json:
        print_json({"store": str(path), "created": not existed, "version": version})
    elif existed:
        out().print(f"{path} is already a convstore store (format version {version})")
    else:
        out().print(f"Initialised an empty convstore store in {path}")


def new(
    ctx: typer.Context,
    session_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            metavar="ID",
            callback=check_new_session_id,
            help="The session id (default: a new one).",
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", callback=check_title, help="A title.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", metavar="USER", callback=check_user, help="Its user.")
    ] = None,
    org: Annotated[
        str | None,
        typer.Option("--org", metavar="ORG", callback=check_org, help="Its organisation."),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent",
            metavar="AGENT",
            callback=usage_check(lambda v: _check_label(v, "agent_id", 256)),
            help="The agent it belongs to.",
        ),
    ] = None,
    meta: MetaOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Create a session and print its id."""
    metadata = parse_meta(meta)  # before the store is made: refused input writes nothing
    with open_store(ctx, store, create=True) as s:
        session = s.create_session(
            session_id,
            title=title,
            user_id=user,
            org_id=org,
            agent_id=agent,
            metadata=metadata,
        )
        print_json(session.info()) if json else out().print(session.id)


def ls(
    ctx: typer.Context,
    user: UserOpt = None,
    org: OrgOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=0, help="At most this many sessions.")
    ] = None,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many first.")] = 0,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """List sessions, most recently active first."""
    with open_store(ctx, store) as s:
        found = s.sessions(
            user_id=user, org_id=org, since=since, until=until, limit=limit, offset=offset
        )
        infos = [x.info() for x in found]
    if json:
        print_json(infos)
        return
    if not infos:
        out().print("No sessions match." if (user or org or since or until) else "No sessions yet.")
        return
    out().print(session_table(infos))


def session_table(infos: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", style="cyan", no_wrap=True)
    table.add_column("TITLE", overflow="ellipsis", max_width=40, no_wrap=True)
    table.add_column("USER", no_wrap=True)
    table.add_column("ORG", no_wrap=True)
    table.add_column("MSGS", justify="right")
    table.add_column("UPDATED (UTC)", no_wrap=True)
    for i in infos:
        title = i["title"] or "(untitled)"
        if i["parent"]:
            title = f"↳ {title}"
        table.add_row(
            i["id"],
            title,
            i["user_id"] or "",
            i["org_id"] or "",
            str(i["messages"]),
            human_time(i["updated_at"]),
        )
    return table


def rm(
    ctx: typer.Context,
    session_id: SessionArg,
    message: Annotated[
        str | None,
        typer.Option("--message", "-m", metavar="ID", help="Delete this message, not the session."),
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Delete a session (or one of its messages). Compaction removes the bytes."""
    branches: list[str] = []
    with open_store(ctx, store) as s:
        session = s.session(session_id)
        if message is None:
            s.delete_session(session.id)
            branches = s.branches(session.id)
        else:
            session.delete_message(message)
    if json:
        print_json(
            {"session": session_id, "message": message, "deleted": True, "branches": branches}
        )
    elif message is None:
        out().print(f"Deleted session {session_id}")
    else:
        out().print(f"Deleted message {message} from session {session_id}")
    if branches and not json:
        err().print(
            f"Note: {len(branches)} branch(es) still show its messages, inherited from it: "
            f"{', '.join(branches)}. To delete them too: convstore rm "
            + " && convstore rm ".join(branches),
            soft_wrap=True,
        )


def branch(
    ctx: typer.Context,
    session_id: SessionArg,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", metavar="MESSAGE", help="Share history up to this message (default: the last)."
        ),
    ] = None,
    new_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            metavar="ID",
            callback=check_new_session_id,
            help="The branch's id (default: a new one).",
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", callback=check_title, help="Its title.")
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Start a session that shares SESSION's history up to a message; print its id."""
    with open_store(ctx, store) as s:
        made = s.branch(session_id, at, branch_id=new_id, title=title)
        print_json(made.info()) if json else out().print(made.id)


def merge(
    ctx: typer.Context,
    session_ids: Annotated[
        list[str],
        typer.Argument(
            metavar="SESSION...",
            help="Two or more sessions.",
            autocompletion=complete_session,
            callback=usage_check(_merge_sources, each=False),
        ),
    ],
    new_id: Annotated[
        str | None,
        typer.Option(
            "--id", metavar="ID", callback=check_new_session_id, help="The new session's id."
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", callback=check_title, help="Its title.")
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Make a session interleaving the given ones by time, with provenance; print its id."""
    with open_store(ctx, store) as s:
        made = s.merge(session_ids, session_id=new_id, title=title)
        print_json(made.info()) if json else out().print(made.id)


def _merge_sources(session_ids: list[str]) -> None:
    check_merge_sources([validate_session_id(s) for s in session_ids])


def register(app: typer.Typer) -> None:
    for fn in (init, new, ls, rm, branch, merge):
        app.command(rich_help_panel=PANEL)(fn)
