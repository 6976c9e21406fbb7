"""What every command shares: the common options, opening the store, and printing results."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .. import layout
from ..dates import parse_when
from ..errors import InvalidInput, StoreError
from ..ids import format_us, to_us, validate_new_session_id, validate_session_id
from ..records import Message, check_role
from ..session import _check_label
from ..store import Store

PIPED_WIDTH = 1000


def usage_check(check: Callable[[Any], object], *, each: bool = True) -> Callable[[Any], Any]:
    """A parameter callback that runs the library's own check on the value given.

    A value the check refuses is bad usage (exit 2, naming the option), found before the store
    is opened; without it the same refusal would come later from the library, as an error
    (exit 1). ``each``: a list value is checked item by item, else as a whole.
    """

    def callback(value: Any) -> Any:
        if value is None:
            return value
        try:
            for item in value if each and isinstance(value, (list, tuple)) else [value]:
                check(item)
        except InvalidInput as e:
            raise typer.BadParameter(str(e)) from None
        return value

    return callback


check_session_id = usage_check(validate_session_id)
check_new_session_id = usage_check(validate_new_session_id)
check_when = usage_check(parse_when)
check_role_given = usage_check(check_role)
check_title = usage_check(lambda v: _check_label(v, "title", 1000))
check_user = usage_check(lambda v: _check_label(v, "user_id", 256))
check_org = usage_check(lambda v: _check_label(v, "org_id", 256))

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        metavar="DIR",
        show_default=False,
        help="The store folder. Default: $CONVSTORE_DIR, else the platform's user data folder.",
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (schemas in docs/CLI.md).")
]
UserOpt = Annotated[str | None, typer.Option("--user", metavar="USER", help="Only this user.")]
OrgOpt = Annotated[str | None, typer.Option("--org", metavar="ORG", help="Only this organisation.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        callback=check_when,
        help="From this time on: 2026-05-01, 2026-05-01T10:00Z, 7d, 3h, 2w, yesterday (UTC).",
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until",
        metavar="WHEN",
        callback=check_when,
        help="Before this time (a bare date includes the day).",
    ),
]
MetaOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--meta",
        metavar="KEY=VALUE",
        help="Metadata; repeatable. VALUE is read as JSON when it parses (12, true), else text.",
    ),
]


def complete_session(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of session ids: a listing of the store's sessions folder, no more."""
    try:
        given = ctx.params.get("store")
        path = store_path(ctx, Path(given) if given else None)
        names = os.listdir(path / layout.SESSIONS)
    except (OSError, TypeError, ValueError):
        return []
    return sorted(n for n in names if n.startswith(incomplete) and not n.startswith("."))[:500]


SessionArg = Annotated[
    str,
    typer.Argument(
        metavar="SESSION",
        help="The session.",
        autocompletion=complete_session,
        callback=check_session_id,
    ),
]


def store_path(ctx: typer.Context, store: Path | None) -> Path:
    """The command's --store, else the one given before the command, else the default."""
    return named_store_path(ctx, store) or layout.default_path()


def named_store_path(ctx: typer.Context, store: Path | None) -> Path | None:
    """The store the user named: --store (after or before the command), else $CONVSTORE_DIR."""
    if store is not None:
        return store.expanduser()
    root = ctx.find_root()
    given = root.obj.get("store") if isinstance(root.obj, dict) else None
    if given is None:
        given = root.params.get("store")  # during shell completion no callback has run
    if given is not None:
        return Path(given).expanduser()
    env = os.environ.get("CONVSTORE_DIR")
    return Path(env).expanduser() if env else None


@contextmanager
def open_store(ctx: typer.Context, store: Path | None, *, create: bool = False) -> Iterator[Store]:
    """Open the store; commands that only read refuse a folder that is not a store yet."""
    path = store_path(ctx, store)
    if not create and not (path / layout.MARKER).exists():
        raise StoreError(
            f"no convstore store at {path}; create one with `convstore init {path}` "
            "or point --store (or $CONVSTORE_DIR) at an existing one"
        )
    with Store(path) as s:
        yield s


# -- output ------------------------------------------------------------------------------------


def out() -> Console:
    """A console on stdout. Made per call so that it follows sys.stdout when it is swapped.

    ``soft_wrap``: plain lines are not cut at the console width (tables still fit it).
    """
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        # Piped: tables take the width they need instead of being cut to 80 columns.
        console.width = PIPED_WIDTH
    return console


def err() -> Console:
    return Console(stderr=True, highlight=False)


def jsonable(value: Any) -> Any:
    """Plain JSON values from what the library returns (dataclasses, datetimes, Messages)."""
    if isinstance(value, Message):
        return message_dict(value)
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return format_us(to_us(value))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(value), ensure_ascii=False, indent=2) + "\n")


def print_jsonl(value: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(value), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def message_dict(m: Message) -> dict[str, Any]:
    """The message object of every --json schema."""
    d = m.to_dict()
    return {
        "id": d["id"],
        "session_id": m.session_id,
        "role": d["role"],
        "content": d["content"],
        "text": m.text,
        "metadata": d["metadata"],
        "created_at": d["created_at"],
        "edited_at": d["edited_at"],
    }


def human_time(value: str | datetime | None) -> str:
    """``2026-05-01 10:00`` from either form of a time (UTC, to the minute)."""
    if value is None:
        return ""
    text = format_us(to_us(value)) if isinstance(value, datetime) else value
    return f"{text[:10]} {text[11:16]}"


@contextmanager
def progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal; None (quiet) when output is piped."""
    console = err()
    if not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def spinner(label: str) -> Iterator[None]:
    """A spinner on stderr while work of unknown length runs, when stderr is a terminal."""
    console = err()
    if not console.is_terminal:
        yield
        return
    with console.status(label):
        yield


# -- input -------------------------------------------------------------------------------------


def parse_meta(items: Sequence[str] | None) -> dict[str, Any]:
    """``["model=gpt-4o", "tokens=12"]`` -> ``{"model": "gpt-4o", "tokens": 12}``."""
    meta: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--meta'")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        meta[key] = value
    return meta


def read_text(text: str | None, what: str = "TEXT") -> str:
    """The text argument, or stdin when it is '-' or missing and stdin is not a terminal."""
    if text is not None and text != "-":
        return text
    if sys.stdin is None or (text is None and sys.stdin.isatty()):
        raise typer.BadParameter(
            f"give {what} as an argument, or pipe it on stdin", param_hint=f"'{what}'"
        )
    body = sys.stdin.read()
    if not body:
        raise typer.BadParameter(
            f"stdin was empty; give {what} as an argument", param_hint=f"'{what}'"
        )
    return body


def read_json_value(text: str | None, what: str = "JSON") -> Any:
    raw = read_text(text, what)
    try:
        return json.loads(raw)
    except ValueError as e:
        raise typer.BadParameter(f"not valid JSON: {e}", param_hint=f"'{what}'") from None
