"""The installed ``convstore`` console script, run as a real process."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from convstore import Store
from tests.fixtures.cli import IMPORT, console_script, run_script

pytestmark = pytest.mark.skipif(
    console_script() is None, reason="the convstore console script is not installed"
)


class TestExitCodes:
    def test_version_and_help(self) -> None:
        version = run_script("--version")
        assert version.returncode == 0 and version.stdout.startswith("convstore ")
        helped = run_script("--help")
        assert helped.returncode == 0
        for command in ("init", "add", "show", "search", "import", "demo", "state"):
            assert command in helped.stdout

    def test_a_refused_operation_exits_1_with_one_line_and_no_traceback(
        self, tmp_path: Path
    ) -> None:
        run_script("--store", str(tmp_path / "s"), "init")
        result = run_script("--store", str(tmp_path / "s"), "show", "nope")
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            f"error: no session 'nope' in {tmp_path / 's'}; list them with `convstore ls` "
            "or store.sessions()\n"
        )

    def test_a_command_that_loaded_pyarrow_exits_0_with_all_its_output(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Such a process leaves through os._exit once its atexit handlers have run (pyarrow's
        # teardown sometimes aborts: apache/arrow#34314); what it printed must all arrive.
        store = str(tmp_path / "s")
        texts = [f"message {i} " + "z" * 2000 for i in range(60)]
        with Store(store) as built:
            for i in range(3):
                built.create_session(f"s{i}").extend(
                    [{"role": "user", "content": text} for text in texts]
                )
        assert run_script("--store", store, "compact").returncode == 0
        # --json output is written without a flush of its own, and a pipe is block-buffered
        # (unless PYTHONUNBUFFERED is set): the exit path must flush it.
        monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
        shown = run_script("--store", store, "show", "s2", "--json", "--limit", "1")
        assert shown.returncode == 0, shown.stderr
        assert [m["content"] for m in json.loads(shown.stdout)["messages"]] == texts[-1:]

    def test_bad_usage_exits_2_with_one_line(self, tmp_path: Path) -> None:
        result = run_script("--store", str(tmp_path), "ls", "--bogus")
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("usage error: No such option: --bogus")
        assert "Traceback" not in result.stderr

    def test_debug_shows_the_traceback_wherever_it_is_given(self, tmp_path: Path) -> None:
        for args in (["--debug", "ls"], ["ls", "--debug"]):
            result = run_script("--store", str(tmp_path / "missing"), *args)
            assert result.returncode == 1
            assert "Traceback (most recent call last)" in result.stderr
            assert "StoreError: no convstore store at" in result.stderr

    def test_a_malformed_import_exits_1_and_creates_nothing(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text('{"format": "convstore-export", "version": 1, "sessions": [}', "utf-8")
        result = run_script("--store", str(tmp_path / "s"), "import", str(bad))
        assert result.returncode == 1
        assert result.stderr == (
            f"error: {bad}: line 1 column 59: not valid JSON (unexpected character, expected a "
            "JSON value); nothing was imported\n"
        )
        assert not (tmp_path / "s").exists()

    def test_a_piped_import_shows_no_progress_bar(self, tmp_path: Path) -> None:
        result = run_script(
            "--store", str(tmp_path / "s"), "import", str(IMPORT / "chatgpt_branches.json")
        )
        assert result.returncode == 0
        assert result.stderr == ""
        assert "Added 5 sessions" in result.stdout

    def test_stdin_feeds_add(self, tmp_path: Path) -> None:
        store = str(tmp_path / "s")
        result = run_script("--store", store, "add", "--json", input="piped in\n")
        assert result.returncode == 0, result.stderr
        shown = run_script("--store", store, "ls", "--json")
        assert '"messages": 1' in shown.stdout


class TestCompletion:
    def test_bash_completion_lists_commands(self) -> None:
        script = console_script()
        assert script is not None
        env = {
            **os.environ,
            "_CONVSTORE_COMPLETE": "complete_bash",
            "COMP_WORDS": "convstore sh",
            "COMP_CWORD": "1",
        }
        result = subprocess.run([script], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0
        assert result.stdout.split() == ["show"]

    def test_session_ids_complete_from_the_store(self, tmp_path: Path) -> None:
        store = str(tmp_path / "s")
        for sid in ("trip-1", "trip-2", "work"):
            assert run_script("--store", store, "new", "--id", sid).returncode == 0
        script = console_script()
        assert script is not None
        env = {
            **os.environ,
            "_CONVSTORE_COMPLETE": "complete_bash",
            "COMP_WORDS": f"convstore --store {store} show tr",
            "COMP_CWORD": "4",
        }
        result = subprocess.run([script], env=env, capture_output=True, text=True, check=False)
        assert result.stdout.split() == ["trip-1", "trip-2"]

    def test_show_completion_prints_a_script(self) -> None:
        # --show-completion detects the shell it runs under from its parent processes: run it
        # from bash (the trailing `; exit $?` keeps bash from exec-ing it away), so that the test
        # does not depend on how pytest itself was started.
        script = console_script()
        assert script is not None
        result = subprocess.run(
            ["bash", "-c", f'"{script}" --show-completion; exit $?'],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "_CONVSTORE_COMPLETE=complete_bash" in result.stdout


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _wait_for(lines: queue.Queue[str], text: str, seen: list[str]) -> None:
    while not any(text in line for line in seen):
        seen.append(lines.get(timeout=60))


def test_follow_prints_new_messages_and_exits_0_on_ctrl_c(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    assert run_script("--store", store, "new", "--id", "chat").returncode == 0
    assert run_script("--store", store, "add", "-s", "chat", "first words").returncode == 0
    script = console_script()
    assert script is not None
    proc = subprocess.Popen(
        [script, "--store", store, "show", "chat", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _wait_for(lines, "first words", seen)
        assert run_script("--store", store, "add", "-s", "chat", "late words").returncode == 0
        _wait_for(lines, "late words", seen)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert err == ""
    assert len(seen) == 2 and all(line.startswith('{"id": ') for line in seen)


def _run_on_a_terminal_stderr(*args: str) -> tuple[int, str, str]:
    """Run the script with stderr on a pseudo-terminal: (exit code, stdout, what stderr showed)."""
    import pty

    script = console_script()
    assert script is not None
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([script, *args], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_long_work_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    code, out, shown = _run_on_a_terminal_stderr(
        "--store", store, "import", str(IMPORT / "chatgpt_branches.json")
    )
    assert code == 0 and "Added 5 sessions" in out
    assert "Reading 1 file" in shown and "Importing" in shown
    code, _, shown = _run_on_a_terminal_stderr(
        "--store", store, "export", "-f", "jsonl", "-o", str(tmp_path / "x.jsonl")
    )
    assert code == 0 and "Exporting" in shown


def test_follow_with_a_limit_prints_the_last_messages_then_only_new_ones(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    with Store(store) as built:
        built.create_session("chat").extend(
            [{"role": "user", "content": f"old words {i}"} for i in range(3)]
        )
    script = console_script()
    assert script is not None
    proc = subprocess.Popen(
        [script, "--store", store, "show", "chat", "--follow", "-n", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _wait_for(lines, "old words 2", seen)
        assert run_script("--store", store, "add", "-s", "chat", "late words").returncode == 0
        _wait_for(lines, "late words", seen)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert [json.loads(line)["text"] for line in seen] == ["old words 2", "late words"]
