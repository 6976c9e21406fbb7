"""The demo: a store built from ``sample_data/`` and a guided tour of the command line.

``convstore demo [DIR]`` imports the sample conversations (convstore's own export, a ChatGPT
and a Claude export) into DIR, then runs a handful of ordinary commands (``ls``, ``show``,
``search``, ``stats``, ``sql``), printing each one before its output so that it can be run
again by hand. This module finds the data and chooses the commands; the CLI runs them.

``sample_data/`` lives at the root of a source checkout, and a wheel carries it as
``convstore/sample_data`` (pyproject.toml maps it). It is looked for in this order: the
``--sample`` option, the ``CONVSTORE_SAMPLE_DATA`` environment variable, inside the installed
package (a wheel), the checkout this package was imported from (an editable install), and
``./sample_data``. When none has it, the demo says so and how to get it, and exits 1.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import NotFound
from .records import Message
from .store import Store

SAMPLE_FILES = ("sessions.json", "chatgpt_conversations.json", "claude_conversations.json")
ENV = "CONVSTORE_SAMPLE_DATA"


@dataclass(frozen=True)
class Step:
    """One command of the tour and a sentence on what it shows."""

    note: str
    args: tuple[str, ...]

    def command(self, store_arg: str) -> str:
        """The command line as the user would type it (for a POSIX shell)."""
        return " ".join(_quote(a) for a in ["convstore", "--store", store_arg, *self.args])


def _quote(arg: str) -> str:
    """shlex.quote, but SQL with single quotes goes in double quotes, which reads better."""
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def find_sample_data(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds the sample files; NotFound names every place it looked."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit).expanduser())
    elif os.environ.get(ENV):
        candidates.append(Path(os.environ[ENV]).expanduser())
    else:
        here = Path(__file__).resolve().parent
        candidates += [here / "sample_data", here.parent / "sample_data"]
        candidates.append(Path.cwd() / "sample_data")
    for folder in candidates:
        if all((folder / name).is_file() for name in SAMPLE_FILES):
            return folder
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise NotFound(
        f"the sample data is not here (looked in {looked}). It ships with convstore's source "
        "and wheel: reinstall convstore, run the demo from a checkout of its repository, or "
        f"pass --sample DIR (or set ${ENV}) to a folder holding {', '.join(SAMPLE_FILES)}"
    )


def sample_files(folder: Path) -> list[Path]:
    return [folder / name for name in SAMPLE_FILES]


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (shorter to retype)."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return str(rel) if str(rel) != "." else "."


def import_step(folder: Path) -> Step:
    return Step(
        "Import convstore's own export and the ChatGPT and Claude samples. Running it again "
        "adds nothing: import is idempotent.",
        ("import", *(display_path(p) for p in sample_files(folder))),
    )


def tour(store: Store) -> list[Step]:
    """The commands to show, chosen from what the store holds."""
    return [
        Step("The five most recently active sessions.", ("ls", "--limit", "5")),
        Step(
            "One conversation with a tool call, as a transcript (the last 6 messages).",
            ("show", _showcase(store), "--limit", "6"),
        ),
        Step(
            "Ranked full-text search, matches highlighted.",
            ("search", "fjord OR quokka", "--limit", "5"),
        ),
        Step(
            "Statistics for September 2026 only.",
            ("stats", "--since", "2026-09-01", "--until", "2026-09-30"),
        ),
        Step(
            "SQL over every message (DuckDB): which user asks which model most.",
            (
                "sql",
                "SELECT user_id, model, count(*) AS answers FROM messages "
                "WHERE role = 'assistant' AND user_id IS NOT NULL "
                "GROUP BY ALL ORDER BY answers DESC LIMIT 5",
            ),
        ),
    ]


def _showcase(store: Store) -> str:
    """The shortest session whose last 6 messages start with the user and hold a tool call."""
    best: tuple[int, str] | None = None
    for s in store.sessions():
        messages = s.messages()
        last = messages[-6:]
        fits = len(last) == 6 and last[0].role == "user" and any(_calls_tool(m) for m in last)
        if fits and (best is None or (len(messages), s.id) < best):
            best = (len(messages), s.id)
    if best is not None:
        return best[1]
    newest = store.sessions(limit=1)
    if not newest:
        raise NotFound("the demo store has no sessions; the import must have failed")
    return newest[0].id


def _calls_tool(m: Message) -> bool:
    return isinstance(m.content, list) and any(p.get("type") == "tool_call" for p in m.content)


def next_steps(store: Store) -> list[Step]:
    """Commands suggested at the end, for the user to try."""
    steps = [
        Step(
            "Search newest first, only what users wrote:",
            ("search", "python", "--role", "user", "--newest"),
        )
    ]
    branches = [s for s in store.sessions() if s.parent is not None]
    if branches:
        b = branches[0]
        steps.append(
            Step(
                "A ChatGPT regeneration, imported as a branch of its conversation:",
                ("show", b.id),
            )
        )
    steps.append(
        Step(
            "Export a user's sessions as Markdown:",
            ("export", "--user", "alice", "--format", "markdown", "--output", "alice.md"),
        )
    )
    return steps
