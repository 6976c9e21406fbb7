"""The README's ``convstore`` commands run as written and print what the README shows.

Every ``$ convstore ...`` line of a ```console block is run, in order, as a real process in one
temporary working folder (so ``--store demo-store`` means the same store from line to line). Each
line printed under a command in the README must appear in what the command printed; a line
holding ``...`` stands for output left out. Other commands (``pip install``, ``make``) are not run.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.fixtures.cli import ROOT, console_script, run_script

README = ROOT / "README.md"


def readme_commands() -> list[tuple[list[str], list[str]]]:
    """(argv after 'convstore', the output lines shown under it) for each command."""
    if not README.exists():
        return []
    found: list[tuple[list[str], list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", README.read_text("utf-8"), re.DOTALL):
        current: list[str] | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                argv = shlex.split(line[2:], comments=True)
                current = None
                if argv and argv[0] == "convstore":
                    found.append((argv[1:], []))
                    current = found[-1][1]
            elif current is not None and line.strip():
                current.append(line.rstrip())
    return found


COMMANDS = readme_commands()


@pytest.mark.skipif(console_script() is None, reason="the convstore console script is missing")
def test_the_readme_commands_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not COMMANDS:
        pytest.skip("README.md shows no `$ convstore ...` command yet")
    monkeypatch.chdir(tmp_path)
    for argv, shown in COMMANDS:
        result = run_script(*argv, timeout=300)
        printed = [line.rstrip() for line in result.stdout.splitlines()]
        assert result.returncode == 0, (argv, result.stderr)
        for line in shown:
            if "..." not in line:
                assert line in printed, (argv, line, printed[:20])
