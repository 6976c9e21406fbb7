"""Moving conversations in and out: export, import."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .. import exporters, importers, layout
from ..wording import plural
from ._common import (
    JsonOpt,
    OrgOpt,
    SinceOpt,
    StoreOpt,
    UntilOpt,
    UserOpt,
    check_org,
    check_session_id,
    check_user,
    complete_session,
    open_store,
    out,
    print_json,
    progress,
    spinner,
    store_path,
)

PANEL = "Import and export"


class ExportFormat(str, Enum):
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    markdown = "markdown"
    parquet = "parquet"


class ImportFormat(str, Enum):
    auto = "auto"
    convstore = "convstore"
    chatgpt = "chatgpt"
    claude = "claude"
    openai = "openai"


def export(
    ctx: typer.Context,
    session_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[SESSION]...",
            help="Sessions to export (default: all that match).",
            autocompletion=complete_session,
            callback=check_session_id,
        ),
    ] = None,
    format: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="json (re-importable), jsonl, csv, markdown, parquet."),
    ] = ExportFormat.json,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write here (default: stdout)."),
    ] = None,
    user: UserOpt = None,
    org: OrgOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Export sessions: all of them, the ones named, or those matching the filters."""
    to_stdout = output is None or str(output) == "-"
    if to_stdout and json:
        raise typer.BadParameter(
            "--json prints a summary of the export; give --output FILE", param_hint="'--json'"
        )
    if to_stdout and format is ExportFormat.parquet:
        raise typer.BadParameter("Parquet needs --output FILE", param_hint="'--format'")
    with open_store(ctx, store) as s:
        chosen = exporters.select_sessions(
            s, session_ids or (), user_id=user, org_id=org, since=since, until=until
        )
        with progress("Exporting") as update:
            report = exporters.export(
                s,
                chosen,
                format.value,
                None if to_stdout else output,
                stdout=sys.stdout,
                progress=update,
            )
    if json:
        print_json(report.to_dict())
    elif not to_stdout:
        out().print(
            f"Exported {plural(len(report.sessions), 'session')}, "
            f"{plural(report.messages, 'message')} "
            f"to {output} ({format.value}, {report.bytes:,} bytes)"
        )


def import_(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE...", help="Exports to import (.json, .jsonl, or a .zip)."),
    ],
    format: Annotated[
        ImportFormat,
        typer.Option("--format", "-f", help="What the files are (default: detected)."),
    ] = ImportFormat.auto,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            metavar="USER",
            callback=check_user,
            help="User of sessions that do not name one.",
        ),
    ] = None,
    org: Annotated[
        str | None,
        typer.Option(
            "--org",
            metavar="ORG",
            callback=check_org,
            help="Organisation of sessions that do not name one.",
        ),
    ] = None,
    max_size: Annotated[
        str,
        typer.Option(
            "--max-size",
            metavar="SIZE",
            help="Refuse a file (or the JSON in a zip) larger than this: 500M, 4G.",
        ),
    ] = "2G",
    max_ratio: Annotated[
        float,
        typer.Option(
            "--max-ratio",
            metavar="N",
            min=1,
            help="Refuse a zip whose JSON inflates more than N times (a zip bomb).",
        ),
    ] = importers.MAX_IMPORT_RATIO,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Import ChatGPT, Claude, OpenAI-style or convstore exports. Safe to run twice."""
    limit = _size(max_size)
    # Read and check every file before the store is even opened: a refusal leaves no trace.
    with spinner(f"Reading {plural(len(files), 'file')}"):
        plan = importers.plan_files(
            files,
            format=format.value,
            user_id=user,
            org_id=org,
            max_bytes=limit,
            max_ratio=max_ratio,
        )
    if not (store_path(ctx, store) / layout.MARKER).exists():
        importers.check_parents(plan, None)  # no store yet: branches must find parents in the files
    with open_store(ctx, store, create=True) as s, progress("Importing") as update:
        report = importers.write_plan(s, plan, update)
    if json:
        print_json(report.to_dict())
        return
    console = out()
    for f in report.files:
        console.print(f"[dim]{escape(f)}: {report.formats[f]}[/]")
    console.print(
        f"Added {plural(report.sessions_added, 'session')} and "
        f"{plural(report.messages_added, 'message')}; "
        f"{plural(report.sessions_skipped, 'session')} and "
        f"{plural(report.messages_skipped, 'message')} were already there"
    )


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _size(text: str) -> int:
    """``500M``, ``4G``, ``1048576``: a size in bytes, with binary units."""
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in _UNITS else ""
    try:
        value = float(raw[: len(raw) - len(unit)])
    except ValueError:
        value = -1.0
    if not value >= 1 or value * _UNITS[unit] > 2**62:
        raise typer.BadParameter(
            f"{text!r} is not a size; write it as 500M, 4G or a number of bytes",
            param_hint="'--max-size'",
        )
    return int(value * _UNITS[unit])


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel=PANEL)(export)
    app.command("import", rich_help_panel=PANEL)(import_)
