"""Keeping a store small, current and in sync: compact, prune, sync, watch."""

from __future__ import annotations

import threading
from typing import Annotated

import typer
from rich.text import Text

from ..errors import SyncError
from ..gitsync import SyncReport
from ..gitsync import sync as git_sync
from ..watch import WatchEvent
from ..wording import plural
from ._common import (
    JsonOpt,
    OrgOpt,
    StoreOpt,
    UserOpt,
    check_session_id,
    check_when,
    err,
    human_time,
    message_dict,
    open_store,
    out,
    print_json,
    print_jsonl,
)

PANEL = "Maintenance"
_PREVIEW = 120  # characters of a message shown by `watch` on one line


def compact(
    ctx: typer.Context,
    session_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[SESSION]",
            help="Only this session (default: every session).",
            callback=check_session_id,
        ),
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Seal hot segments into Parquet and remove deleted and edited content from the files."""
    with open_store(ctx, store) as s:
        report = s.compact(session_id)
    if json:
        print_json(report.to_dict())
        return
    out().print(str(report).splitlines()[0])
    for problem in report.problems:
        err().print(Text(f"  {problem.session_id}: {problem.skipped}", style="red"))


def prune(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="WHEN",
            callback=check_when,
            help="Delete messages created before this: a span back from now (90d, 12w) or a date.",
        ),
    ],
    user: UserOpt = None,
    org: OrgOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be deleted.")
    ] = False,
    then_compact: Annotated[
        bool,
        typer.Option("--compact", help="Compact the changed sessions at once: the bytes go now."),
    ] = False,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Delete old messages (retention); sessions idle since the cutoff are deleted whole."""
    with open_store(ctx, store) as s:
        report = s.prune(older_than, user_id=user, org_id=org, dry_run=dry_run)
        compacted = None
        if then_compact and not dry_run:
            compacted = [s.compact(sid) for sid in report.sessions]
    if json:
        body = report.to_dict()
        if compacted is not None:
            body["compacted"] = sum(len(c.compacted) for c in compacted)
        print_json(body)
        return
    if compacted is None:
        out().print(str(report))
    else:
        done = sum(len(c.compacted) for c in compacted)
        out().print(f"{report.summary()}; compacted {plural(done, 'session')}")


def sync(
    ctx: typer.Context,
    message: Annotated[
        str | None, typer.Option("--message", "-m", metavar="TEXT", help="The commit message.")
    ] = None,
    pull: Annotated[
        bool, typer.Option("--pull/--no-pull", help="Merge the remote's changes (no rebase).")
    ] = True,
    push: Annotated[bool, typer.Option("--push/--no-push", help="Push after merging.")] = True,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Commit the store folder, merge what the remote has (no rebase), and push (git)."""
    with open_store(ctx, store) as s:
        try:
            report = git_sync(s, message=message, pull=pull, push=push)
        except SyncError as e:
            if json and isinstance(e.report, SyncReport):
                # --json always prints the report: what was committed before the failure.
                print_json({**e.report.to_dict(), "error": str(e)})
            raise
    if json:
        print_json(report.to_dict())
    else:
        out().print(str(report))


def watch(
    ctx: typer.Context,
    sessions: Annotated[
        list[str] | None,
        typer.Option(
            "--session",
            "-s",
            metavar="SESSION",
            callback=check_session_id,
            help="Only this session; repeatable.",
        ),
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Print new, edited and deleted messages as other processes or a git pull bring them."""
    printer = _print_jsonl if json else _print_text
    with open_store(ctx, store) as s:
        watcher = s.watch(printer, sessions=sessions)
        where = ", ".join(sessions) if sessions else "every session"
        # On stderr, so that stdout stays one JSON object per line with --json.
        err().print(f"watching {where} in {s.path} (Ctrl-C stops)")
        try:
            threading.Event().wait()  # Ctrl-C interrupts the wait
        except KeyboardInterrupt:
            pass
        finally:
            watcher.stop()


def _print_jsonl(event: WatchEvent) -> None:
    print_jsonl(
        {
            "sessions": list(event.sessions),
            "messages": [message_dict(m) for m in event.messages],
            "edited": [message_dict(m) for m in event.edited],
            "deleted": list(event.deleted),
            "dropped": list(event.dropped),
        }
    )


def _print_text(event: WatchEvent) -> None:
    console = out()
    for m in event.messages:
        console.print(_line(m.session_id, f"{m.role}:", m.text, human_time(m.created_at)))
    for m in event.edited:
        console.print(_line(m.session_id, "edited", m.text, human_time(m.edited_at)))
    for mid in event.deleted:
        console.print(Text(f"message {mid} deleted", style="dim"))
    for sid in event.dropped:
        console.print(Text(f"session {sid} deleted", style="dim"))
    console.file.flush()


def _line(session_id: str, what: str, text: str, when: str) -> Text:
    flat = " ".join(text.split())
    if len(flat) > _PREVIEW:
        flat = flat[: _PREVIEW - 1] + "…"
    return Text.assemble(
        (f"{when} ", "dim"), (f"{session_id} ", "cyan"), (f"{what} ", "bold"), flat
    )


def register(app: typer.Typer) -> None:
    for fn in (compact, prune, sync, watch):
        app.command(rich_help_panel=PANEL)(fn)
