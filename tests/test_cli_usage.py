"""The exit-code contract of docs/CLI.md: 2 and one `usage error:` line for a malformed value
given on the command line, 1 and one `error:` line when the store refuses; never a traceback,
and nothing written when a command is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from convstore import Store
from tests.fixtures.cli import ok_json, refused

BAD_DATE = "cannot read 'last tuesday' as a date"
BAD_ID = "session id '../x' is not allowed"

# (command line, exit code, what the one line on stderr holds)
BAD_INVOCATIONS: list[tuple[list[str], int, str]] = [
    # A malformed value: bad usage, exit 2.
    (["add", "--role", "wizard", "hi"], 2, "'--role' / '-r': role 'wizard' is not one of"),
    (["add", "-s", "chat", "-r", "wizard", "hi"], 2, "role 'wizard' is not one of"),
    (["add", "-s", "../x", "hi"], 2, f"'--session' / '-s': {BAD_ID}"),
    (["add", "--meta", "x", "hi"], 2, "'--meta': 'x' is not KEY=VALUE"),
    (["add", "--title", "t" * 1001, "hi"], 2, "'--title': title is 1001 characters long"),
    (["new", "--id", "../x"], 2, f"'--id': {BAD_ID}"),
    (["new", "--user", "u" * 257], 2, "'--user': user_id is 257 characters long"),
    (["show", "../x"], 2, f"'SESSION': {BAD_ID}"),
    (["show", "chat", "-n", "-1"], 2, "'--limit' / '-n'"),
    (["show", "chat", "--format", "xml"], 2, "'--format' / '-f'"),
    (["ls", "--since", "last tuesday"], 2, f"'--since': {BAD_DATE}"),
    (["ls", "--until", "last tuesday"], 2, f"'--until': {BAD_DATE}"),
    (["search", "hi", "--role", "wizard"], 2, "'--role' / '-r': role 'wizard' is not one of"),
    (["search", "hi", "--since", "last tuesday"], 2, BAD_DATE),
    (["search", "hi", "--session", "../x"], 2, BAD_ID),
    (["stats", "--until", "last tuesday"], 2, BAD_DATE),
    (["export", "../x"], 2, BAD_ID),
    (["import", "/etc/hostname", "--user", "u" * 300], 2, "user_id is 300 characters long"),
    (["export", "--since", "last tuesday"], 2, BAD_DATE),
    (["prune", "--older-than", "last tuesday"], 2, f"'--older-than': {BAD_DATE}"),
    (["compact", "../x"], 2, BAD_ID),
    (["branch", "chat", "--id", "../x"], 2, BAD_ID),
    (["merge", "chat"], 2, "'SESSION...': merge needs at least two sessions"),
    (["merge", "chat", "chat"], 2, "'SESSION...': session 'chat' is given twice"),
    (["merge", "chat", "other", "--id", "../x"], 2, BAD_ID),
    (["state", "set", "chat", "{bad"], 2, "'JSON': not valid JSON"),
    (["watch", "-s", "../x"], 2, BAD_ID),
    # The store refuses: exit 1.
    (["show", "nope"], 1, "error: no session 'nope'"),
    (["add", "-s", "nope", "hi"], 1, "error: no session 'nope'"),
    (["new", "--id", "chat"], 1, "error: session 'chat' exists"),
    (["merge", "chat", "nope"], 1, "error: no session 'nope'"),
    (["merge", "chat", "other", "--id", "chat"], 1, "error: session 'chat' exists"),
    (["branch", "chat", "--at", "nope"], 1, "error: message 'nope' is not in session 'chat'"),
    (["rm", "chat", "-m", "nope"], 1, "error: no message 'nope'"),
    (["sql", "SELEC"], 1, "error: SQL error"),
]


@pytest.fixture
def two(store_path: Path) -> Path:
    with Store(store_path) as s:
        s.create_session("chat").append("user", "hi")
        s.create_session("other").append("user", "yo")
    return store_path


@pytest.mark.parametrize(
    ("args", "code", "said"), BAD_INVOCATIONS, ids=[" ".join(a)[:40] for a, _, _ in BAD_INVOCATIONS]
)
def test_a_bad_invocation_exits_with_its_code_and_one_line(
    two: Path, args: list[str], code: int, said: str
) -> None:
    line = refused(two, *args, code=code)
    assert line.startswith("usage error: " if code == 2 else "error: ")
    assert said in line
    if code == 2:
        assert line.endswith("--help`)")
    assert len(line) < 400  # an over-long value is not echoed whole
    assert [s["id"] for s in ok_json(two, "ls")] == ["other", "chat"]
