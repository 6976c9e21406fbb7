"""Commands on messages: add, show, edit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.markdown import Markdown
from rich.padding import Padding
from rich.panel import Panel
from rich.text import Text

from ..errors import ConvstoreError
from ..exporters import content_markdown, session_markdown
from ..records import ROLES, Message, check_metadata, check_role, encode_record
from ..session import Session
from ..wording import plural
from ._common import (
    JsonOpt,
    MetaOpt,
    SessionArg,
    StoreOpt,
    check_org,
    check_role_given,
    check_session_id,
    check_title,
    check_user,
    complete_session,
    human_time,
    message_dict,
    open_store,
    out,
    parse_meta,
    print_json,
    print_jsonl,
    read_text,
)

PANEL = "Messages"
ROLE_STYLE = {
    "system": "magenta",
    "developer": "magenta",
    "user": "bold green",
    "assistant": "bold blue",
    "tool": "yellow",
}
# How often --follow looks for new messages when the store cannot be watched. A look costs a
# stat of the session folder and of its live segment, so polling this often stays cheap.
FOLLOW_POLL_SECONDS = 0.1
# With a watcher, a look this often anyway, in case a file event was lost.
FOLLOW_SAFETY_SECONDS = 1.0


class ShowFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


def add(
    ctx: typer.Context,
    text: Annotated[
        str | None,
        typer.Argument(metavar="[TEXT]", help="The message; read from stdin when omitted or '-'."),
    ] = None,
    session_id: Annotated[
        str | None,
        typer.Option(
            "--session",
            "-s",
            metavar="SESSION",
            help="Append to this session (default: a new one).",
            autocompletion=complete_session,
            callback=check_session_id,
        ),
    ] = None,
    role: Annotated[
        str,
        typer.Option(
            "--role", "-r", callback=check_role_given, help=f"The role: {', '.join(ROLES)}."
        ),
    ] = "user",
    meta: MetaOpt = None,
    title: Annotated[
        str | None,
        typer.Option(
            "--title", callback=check_title, help="Title of the new session (without --session)."
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user", metavar="USER", callback=check_user, help="User of the new session."
        ),
    ] = None,
    org: Annotated[
        str | None,
        typer.Option(
            "--org", metavar="ORG", callback=check_org, help="Organisation of the new session."
        ),
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Append a message to a session (a new session unless --session is given)."""
    if session_id is not None and (title is not None or user is not None or org is not None):
        raise typer.BadParameter(
            "--title, --user and --org describe a new session; drop them or --session",
            param_hint="'--session'",
        )
    body = read_text(text)
    metadata = parse_meta(meta)
    # Checked before a new session is made, so a refused message leaves no empty session.
    encode_record({"role": check_role(role), "content": body, "metadata": check_metadata(metadata)})
    with open_store(ctx, store, create=True) as s:
        if session_id is None:
            session = s.create_session(title=title, user_id=user, org_id=org)
        else:
            session = s.session(session_id)
        message = session.append(role, body, metadata=metadata)
    if json:
        print_json(
            {
                "session": session.id,
                "created_session": session_id is None,
                "message": message_dict(message),
            }
        )
    elif session_id is None:
        out().print(f"Added message {message.id} to new session {session.id}")
    else:
        out().print(f"Added message {message.id} to session {session.id}")


def show(
    ctx: typer.Context,
    session_id: SessionArg,
    format: Annotated[
        ShowFormat, typer.Option("--format", "-f", help="text (a transcript), markdown or json.")
    ] = ShowFormat.text,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=0, help="Only the last N messages.")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep printing new messages as they arrive (Ctrl-C stops)."),
    ] = False,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Print a session's messages: a transcript, Markdown or JSON."""
    fmt = ShowFormat.json if json else format
    with open_store(ctx, store) as s:
        session = s.session(session_id)
        if follow:
            # One read gives both what is shown and what counts as seen: the messages that
            # --limit leaves out are old, not new, and a message that arrives after this read
            # is in neither, so it is printed when it comes.
            every = session.messages()
            shown = every if limit is None else every[max(0, len(every) - limit) :]
            _follow(session, shown, every, fmt)
            return
        messages = session.recent(limit) if limit is not None else session.messages()
        if fmt is ShowFormat.json:
            print_json({"session": session.info(), "messages": [message_dict(m) for m in messages]})
        elif fmt is ShowFormat.markdown:
            out().file.write(session_markdown(session, messages))
        else:
            console = out()
            console.print(session_header(session, len(messages), console), soft_wrap=True)
            for m in messages:
                console.print(render_message(m, console), soft_wrap=not console.is_terminal)


def _follow(
    session: Session, shown: Sequence[Message], known: Sequence[Message], fmt: ShowFormat
) -> None:
    """Print ``shown``, then every message not in ``known`` as it arrives, until Ctrl-C.

    With ``convstore.watch`` available the wait is event driven (the watcher wakes us when the
    session's files change; a look every FOLLOW_SAFETY_SECONDS covers a missed event). Without
    it, the session is polled every FOLLOW_POLL_SECONDS.
    """
    console = out()
    emit: Callable[[Message], None]
    if fmt is ShowFormat.json:
        emit = lambda m: print_jsonl(message_dict(m))  # noqa: E731 - one line per message
    elif fmt is ShowFormat.markdown:
        emit = lambda m: _write_flush(console, _markdown_message(m))  # noqa: E731
    else:
        console.print(session_header(session, len(shown), console), soft_wrap=True)
        emit = lambda m: console.print(  # noqa: E731
            render_message(m, console), soft_wrap=not console.is_terminal
        )
    seen = {m.id for m in known}
    for m in shown:
        emit(m)
    console.file.flush()
    changed = threading.Event()
    watcher = _watch(session, changed)
    pause = FOLLOW_SAFETY_SECONDS if watcher is not None else FOLLOW_POLL_SECONDS
    try:
        while True:
            changed.wait(pause)
            changed.clear()
            # Compared by id, not by a cursor: a message backfilled with an older time, or
            # the deletion of the last one shown, must not hide what comes next.
            for m in session.messages():
                if m.id not in seen:
                    seen.add(m.id)
                    emit(m)
            console.file.flush()
    except KeyboardInterrupt:
        return
    finally:
        if watcher is not None:
            watcher.stop()


def _watch(session: Session, changed: threading.Event) -> Any:
    """A running watcher that sets ``changed``, or None when the store cannot be watched."""
    try:
        return session.store.watch(lambda _event: changed.set(), sessions=[session.id])
    except (ImportError, ConvstoreError, OSError):
        return None


def _write_flush(console: Console, text: str) -> None:
    console.file.write(text)
    console.file.flush()


def _markdown_message(m: Message) -> str:
    d = m.to_dict()
    return (
        f"## {m.role} · {human_time(str(d['created_at']))} UTC\n\n{content_markdown(m.content)}\n\n"
    )


def session_header(session: Session, shown: int, console: Console) -> RenderableType:
    """The title and facts of a session: a panel on a terminal, two plain lines when piped."""
    info = session.info()
    facts = [str(info["id"])]
    for key in ("user_id", "org_id", "agent_id"):
        if info[key]:
            facts.append(f"{key.removesuffix('_id')} {info[key]}")
    total = int(info["messages"])
    facts.append(
        plural(total, "message") if shown == total else f"last {shown} of {total} messages"
    )
    span = f"{human_time(str(info['created_at']))} → {human_time(str(info['updated_at']))} UTC"
    facts.append(span)
    lines = [" · ".join(facts)]
    if info["parent"]:
        p = info["parent"]
        lines.append(f"branched from {p['session']} at message {p['message']}")
    title = str(info["title"] or "(untitled)")
    if not console.is_terminal:
        return Text("\n".join([title, *lines]))
    return Panel(Text("\n".join(lines)), title=Text(title, style="bold"), expand=False)


def render_message(m: Message, console: Console) -> RenderableType:
    """One message of a transcript: a header line, then its content (Markdown on a terminal)."""
    d = m.to_dict()
    head = Text()
    head.append(m.role, style=ROLE_STYLE.get(m.role, "bold"))
    head.append(f"  {human_time(str(d['created_at']))}", style="dim")
    if d["edited_at"]:
        head.append(f"  (edited {human_time(str(d['edited_at']))})", style="dim")
    model = m.metadata.get("model")
    if isinstance(model, str):
        head.append(f"  {model}", style="dim italic")
    if _hidden(m):
        head.append("  hidden", style="dim")
    head.append(f"  {m.id}", style="dim")
    text = content_markdown(m.content)
    if not console.is_terminal:
        # Piped: plain text, indented, never re-wrapped (print it with soft_wrap=True).
        body = "\n".join(f"  {line}" if line else "" for line in text.splitlines())
        return Text.assemble("\n", head, "\n", body or "  (empty)")
    shown: RenderableType = Markdown(text) if text else Text("(empty)", style="dim")
    return Group(Text(""), head, Padding(shown, (0, 0, 0, 2)))


def _hidden(m: Message) -> bool:
    source = m.metadata.get("chatgpt")
    return isinstance(source, dict) and source.get("hidden") is True


def edit(
    ctx: typer.Context,
    session_id: SessionArg,
    message_id: Annotated[str, typer.Argument(metavar="MESSAGE", help="The message to change.")],
    text: Annotated[
        str | None,
        typer.Argument(
            metavar="[TEXT]", help="The new content; read from stdin when omitted or '-'."
        ),
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Replace a message's content (the old content is purged by the next compaction)."""
    body = read_text(text)
    with open_store(ctx, store) as s:
        message = s.session(session_id).edit(message_id, body)
    if json:
        print_json(message_dict(message))
    else:
        out().print(f"Edited message {message.id} in session {session_id}")


def register(app: typer.Typer) -> None:
    for fn in (add, show, edit):
        app.command(rich_help_panel=PANEL)(fn)
