"""Looking after a store, and the tour: state, check, reindex, demo."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel
from rich.text import Text

from .. import demo as tour
from ..errors import ConvstoreError
from ..ids import format_us, to_us
from ..importers import import_files
from ..store import Store
from ..wording import plural
from ._common import (
    JsonOpt,
    SessionArg,
    StoreOpt,
    err,
    named_store_path,
    open_store,
    out,
    print_json,
    progress,
    read_json_value,
)

PANEL = "Maintenance"

state_app = typer.Typer(
    name="state",
    help="Read or save a session's agent state (any JSON value).",
    no_args_is_help=True,
)


@state_app.command("get")
def state_get(
    ctx: typer.Context,
    session_id: SessionArg,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Print the latest saved state as JSON (null when none was saved)."""
    with open_store(ctx, store) as s:
        history = s.session(session_id).state_history(limit=1)
    entry = history[0] if history else None
    if json:
        print_json(
            {
                "session": session_id,
                "id": entry.id if entry else None,
                "created_at": format_us(to_us(entry.created_at)) if entry else None,
                "state": entry.state if entry else None,
            }
        )
    else:
        print_json(entry.state if entry else None)


@state_app.command("set")
def state_set(
    ctx: typer.Context,
    session_id: SessionArg,
    value: Annotated[
        str | None,
        typer.Argument(metavar="[JSON]", help="The state; read from stdin when omitted or '-'."),
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Save a new state for the session (only the top-level keys that changed are written)."""
    state = read_json_value(value, "JSON")
    with open_store(ctx, store) as s:
        state_id = s.session(session_id).save_state(state)
    if json:
        print_json({"session": session_id, "id": state_id})
    else:
        out().print(f"Saved state {state_id} for session {session_id}")


def check(
    ctx: typer.Context,
    repair: Annotated[
        bool, typer.Option("--repair", help="Fix what can be fixed (torn tails, leftovers).")
    ] = False,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Re-derive every invariant from the files. Exit 1 if problems remain."""
    with open_store(ctx, store) as s:
        report = s.check(repair=repair)
    if json:
        print_json(report.to_dict())
    else:
        style = "green" if report.ok else "red"
        out().print(Text(str(report).splitlines()[0], style=style))
        for issue in report.issues:
            out().print(Text(f"  {issue}", style="dim" if issue.repaired else ""))
        if not report.ok and not repair:
            err().print("Run `convstore check --repair` to fix what can be fixed.")
    if not report.ok:
        raise typer.Exit(1)


def reindex(
    ctx: typer.Context,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Rebuild the catalog and search index from the files (they are only a cache)."""
    with open_store(ctx, store) as s, progress("Reindexing") as update:
        s.reindex(progress=update)
        sessions = len(s.session_ids())
    if json:
        print_json({"reindexed": True, "sessions": sessions})
    else:
        out().print(f"Rebuilt the catalog and search index ({plural(sessions, 'session folder')})")


def demo(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Argument(
            metavar="[DIR]",
            help="Where to build the demo store (default: --store or $CONVSTORE_DIR, else a "
            "new temporary folder).",
        ),
    ] = None,
    sample: Annotated[
        Path | None,
        typer.Option("--sample", metavar="DIR", help="Where sample_data/ is (default: found)."),
    ] = None,
    store: StoreOpt = None,
    json: JsonOpt = False,
) -> None:
    """Build a store from sample_data/ and tour it, printing each command first."""
    folder = tour.find_sample_data(sample)
    named = directory.expanduser() if directory is not None else named_store_path(ctx, store)
    # Never the platform's default store, which the user did not name: the demo would mix
    # sample data into their own conversations.
    path = named or Path(tempfile.mkdtemp(prefix="convstore-demo-"))
    shown = tour.display_path(path)
    if json:
        with Store(path) as s:
            report = import_files(s, tour.sample_files(folder))
            steps = [tour.import_step(folder), *tour.tour(s), *tour.next_steps(s)]
        print_json(
            {
                "store": str(path),
                "sample_data": str(folder),
                "import": report.to_dict(),
                "commands": [step.command(shown) for step in steps],
            }
        )
        return
    console = out()
    console.print(
        Panel(
            Text.assemble(
                ("convstore demo\n", "bold"),
                f"A store is a plain folder. This one is {shown}: it will hold the sample "
                "conversations. Each command below is printed before it runs, so you can run "
                "it again yourself.",
            ),
            expand=False,
            width=min(console.width, 100),
        ),
        soft_wrap=False,  # the console's default keeps lines whole; this text must wrap
    )
    run = _runner()
    _run_step(run, tour.import_step(folder), shown)
    with Store(path) as s:
        steps = tour.tour(s)
        later = tour.next_steps(s)
    for step in steps:
        _run_step(run, step, shown)
    console.print(Text("\nTry next:", style="bold"))
    for step in later:
        console.print(Text(f"  {step.note}", style="dim"))
        console.print(Text(f"  $ {step.command(shown)}", style="bold cyan"), soft_wrap=True)
    console.print(Text(f"\nEverything is in {shown}/ — `convstore --help` lists every command."))


def _runner() -> Callable[[Sequence[str]], int]:
    """Runs a command line in this process, through the same entry point as the shell."""
    from . import run

    return run


def _run_step(run: Callable[[Sequence[str]], int], step: tour.Step, store_arg: str) -> None:
    console = out()
    console.print()
    console.print(Text(step.note, style="dim"))
    # soft_wrap: a long command stays one line, so it can be copied as it is.
    console.print(Text(f"$ {step.command(store_arg)}", style="bold cyan"), soft_wrap=True)
    code = run(["--store", store_arg, *step.args])
    if code != 0:
        raise _StepFailed(f"the demo stopped: `{step.command(store_arg)}` exited {code}")


class _StepFailed(ConvstoreError):
    """A command of the demo failed (its own error was printed above)."""


def register(app: typer.Typer) -> None:
    app.add_typer(state_app, rich_help_panel=PANEL)
    for fn in (check, reindex):
        app.command(rich_help_panel=PANEL)(fn)
    app.command(rich_help_panel="Getting started")(demo)
