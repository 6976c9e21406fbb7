"""The ``convstore`` command line: a thin skin over the library.

Each module holds the commands of one noun (``sessions``, ``messages``, ``query``, ``transfer``,
``admin``; ``maintenance`` when present); each command parses its options, calls the library
and prints. Errors are one line on stderr: exit 1 when the library refused (any
ConvstoreError, or the operating system), 2 for bad usage, 130 on Ctrl-C, and a traceback only
with ``--debug``. docs/CLI.md is the reference.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import ConvstoreError
from . import admin, messages, query, sessions, transfer
from ._common import StoreOpt

__all__ = ["app", "main", "run"]

# Usage errors derive from click's ClickException, which newer typer vendors (typer._click)
# and older typer takes from click itself: find it through a public class in either case.
_CLICK_ERRORS: tuple[type[Exception], ...] = tuple(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)

_HELP = (
    "convstore: a local-first, file-based store for LLM conversations.\n\n"
    "A store is a plain folder (--store DIR, or $CONVSTORE_DIR). New here? Run `convstore demo`."
)


class _Group(TyperGroup):
    """Turns every failure into one line on stderr and an exit code (see the module doc)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = _take_debug(argv)
        code = _invoke(
            lambda: super(_Group, self).main(
                argv,
                prog_name or "convstore",
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            ),
            debug,
        )
        if standalone_mode:
            sys.exit(code)
        return code


def _take_debug(argv: list[str]) -> bool:
    """Remove ``--debug`` wherever it is (before a ``--``), so it works after a command too."""
    end = argv.index("--") if "--" in argv else len(argv)
    found = "--debug" in argv[:end]
    if found:
        argv[:] = [a for i, a in enumerate(argv) if i >= end or a != "--debug"]
    return found


def _invoke(call: Any, debug: bool) -> int:
    try:
        rv = call()
    except _CLICK_ERRORS as e:
        if debug:
            raise
        if type(e).__name__ == "NoArgsIsHelpError":
            # A group called without a command: its help, already printed when rich is on.
            sys.stderr.write(_message(e))
        else:
            _say(_usage_message(e))
        return int(getattr(e, "exit_code", 2))
    except typer.Abort:
        _say("aborted")
        return 1
    except ConvstoreError as e:
        if debug:
            raise
        _say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        _say(f"error: {e.strerror or e}{where}")
        return 1
    except Exception as e:
        if debug:
            raise
        _say(
            f"internal error: {type(e).__name__}: {e} "
            "(run again with --debug for the traceback, and please report it)"
        )
        return 1
    return rv if isinstance(rv, int) else 0


def _usage_message(e: Any) -> str:
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else "convstore"
    return f"usage error: {_message(e)} (see `{where} --help`)"


def _message(e: Exception) -> str:
    fmt = getattr(e, "format_message", None)
    return str(fmt()) if callable(fmt) else str(e)


def _say(line: str) -> None:
    sys.stderr.write(" ".join(line.split()) + "\n")
    sys.stderr.flush()


app = typer.Typer(
    name="convstore",
    cls=_Group,
    help=_HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"convstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    store: StoreOpt = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an error (anywhere).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = {"store": store}


for _module in (sessions, messages, query, transfer, admin):
    _module.register(app)

try:
    _maintenance = importlib.import_module(f"{__name__}.maintenance")
except ModuleNotFoundError as _missing:  # compact, prune, sync, watch: optional here
    if _missing.name != f"{__name__}.maintenance":
        raise
else:
    _maintenance.register(app)


def run(args: Sequence[str]) -> int:
    """Run one command line in this process and return its exit code (the demo uses it)."""
    command = typer.main.get_command(app)
    code = command.main(list(args), prog_name="convstore", standalone_mode=False)
    return int(code) if isinstance(code, int) else 0


def main() -> None:
    """The ``convstore`` console script."""
    code = typer.main.get_command(app).main(prog_name="convstore", standalone_mode=False)
    _exit(int(code) if isinstance(code, int) else 0)


def _exit(code: int) -> NoReturn:
    """Leave the process with ``code``, past pyarrow's teardown when it was loaded.

    A process that loaded pyarrow sometimes aborts after all its work is done, while native
    threads are torn down ("terminate called without an active exception", exit 134;
    apache/arrow#34314): about once in 40 runs of a command that sealed files here. The
    exit code of a command that succeeded must not say otherwise, so once every atexit
    handler has run (they close stores and let a background compaction finish), the process
    ends with os._exit, which skips only the interpreter's and the libraries' teardown.
    """
    if "pyarrow" not in sys.modules:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
