"""docs/CLI.md documents every command and every option the CLI has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from convstore.cli import app

DOC = Path(__file__).resolve().parent.parent / "docs" / "CLI.md"


def sections() -> dict[str, str]:
    """``### heading`` -> its text; a heading naming several commands files each under it."""
    text = DOC.read_text("utf-8")
    out: dict[str, str] = {}
    for block in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        for name in re.split(r",\s*", heading.strip()):
            out[name] = body
    return out


def shared() -> set[str]:
    """Commands named together under one heading (the maintenance commands, whose options
    their own --help describes): they must be named, their options need not be listed."""
    text = DOC.read_text("utf-8")
    headings = re.findall(r"^### (.+)$", text, flags=re.MULTILINE)
    return {n for h in headings if "," in h for n in re.split(r",\s*", h.strip())}


def commands() -> list[tuple[str, Any]]:
    """(name, click command) for every command, 'state get' style for a group's commands."""
    root = typer.main.get_command(app)
    found: list[tuple[str, Any]] = []
    for name, cmd in sorted(root.commands.items()):  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        if sub:
            found.extend((f"{name} {n}", c) for n, c in sorted(sub.items()))
        else:
            found.append((name, cmd))
    return found


ALL = commands()


def test_the_cli_has_the_commands_the_issue_names() -> None:
    names = {n.split()[0] for n, _ in ALL}
    wanted = (
        "init new add show ls search sql stats export import rm edit branch merge state check "
        "reindex demo"
    )
    assert set(wanted.split()) <= names


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_every_command_has_a_section(name: str, command: Any) -> None:
    assert name.split()[0] in sections(), f"docs/CLI.md has no '### {name.split()[0]}' section"


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_every_option_is_in_its_command_section(name: str, command: Any) -> None:
    if name.split()[0] in shared():
        pytest.skip(f"'{name}' is documented in a shared section; its --help lists the options")
    body = sections()[name.split()[0]]
    if " " in name:
        assert f"convstore {name}" in body, f"'convstore {name}' is not in its section"
    for param in command.params:
        for opt in param.opts:
            # --store and --help are the same for every command: documented once, up top.
            if opt.startswith("--") and opt not in ("--help", "--store"):
                assert opt in body, f"{opt} of '{name}' is not documented in its section"


@pytest.mark.parametrize(("name", "command"), ALL, ids=[n for n, _ in ALL])
def test_every_command_with_json_documents_its_schema(name: str, command: Any) -> None:
    if name.split()[0] in shared():
        pytest.skip(f"'{name}' is documented in a shared section")
    if any("--json" in p.opts for p in command.params):
        assert "`--json`" in sections()[name.split()[0]], f"'{name}' has --json but no schema"


def test_the_exit_codes_are_documented() -> None:
    text = DOC.read_text("utf-8")
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert code in text
    assert "--debug" in text and "--store" in text
