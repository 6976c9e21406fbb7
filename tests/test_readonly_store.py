"""A store on a read-only mount can be read whole; writes are refused with a clear error."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from convstore import Store, StoreError
from convstore.importers import import_files

from .conftest import ROOT

CLI = "from convstore.cli import main; main()"
CHATGPT = Path(__file__).parent / "fixtures" / "import" / "chatgpt_branches.json"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's cache folder (platformdirs follows XDG_CACHE_HOME), kept in the test."""
    home = tmp_path / "user-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def ro_store(tmp_path: Path, cache_home: Path) -> Iterator[Path]:
    """A store with two sessions (one compacted), seen through a read-only bind mount."""
    src = tmp_path / "store"
    with Store(src) as s:
        a = s.create_session("alpha", title="Alpha")
        a.append("user", "where do penguins live")
        a.append("assistant", "in the southern hemisphere")
        s.compact("alpha")
        s.create_session("beta", title="Beta").append("user", "hello there")
    ro = tmp_path / "ro"
    ro.mkdir()
    done = _mount("--bind", str(src), str(ro))
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root and mount rights): {done.stderr.strip()}")
    try:
        done = _mount("-o", "remount,bind,ro", str(ro))
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def run_cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", CLI, "--store", str(store), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def refusal(store: Path, what: str) -> str:
    return (
        f"the store at {store} is read-only: cannot {what}. Reads work; to write, remount it "
        "read-write or copy it to a writable folder"
    )


class TestReadingAReadOnlyStore:
    def test_every_read_works_through_the_library(self, ro_store: Path, cache_home: Path) -> None:
        with Store(ro_store) as s:
            assert s.read_only
            assert s.session_ids() == ["alpha", "beta"]
            assert [x.id for x in s.sessions()] == ["beta", "alpha"]
            assert [m.content for m in s.session("alpha").messages()] == [
                "where do penguins live",
                "in the southern hemisphere",
            ]
            assert [h.session_id for h in s.search("penguins")] == ["alpha"]
            assert s.sql("select count(*) from messages").rows == [(3,)]
            assert s.stats().messages == 3
            report = s.check()
            assert report.ok, str(report)
            assert report.sessions == 2
        # The local cache went to the user's cache folder, private, and not into the store.
        caches = list((cache_home / "convstore" / "read-only").iterdir())
        assert len(caches) == 1
        assert stat.S_IMODE(caches[0].stat().st_mode) == 0o700
        assert (caches[0] / ".cache" / "catalog").is_dir()

    def test_every_read_works_through_the_cli(self, ro_store: Path, tmp_path: Path) -> None:
        ls = run_cli(ro_store, "ls")
        assert ls.returncode == 0, ls.stderr
        assert "alpha" in ls.stdout and "beta" in ls.stdout
        show = run_cli(ro_store, "show", "alpha")
        assert show.returncode == 0, show.stderr
        assert "southern hemisphere" in show.stdout
        search = run_cli(ro_store, "search", "penguins", "--json")
        assert search.returncode == 0, search.stderr
        assert [h["session_id"] for h in json.loads(search.stdout)] == ["alpha"]
        sql = run_cli(ro_store, "sql", "select count(*) as n from messages", "--format", "csv")
        assert sql.returncode == 0, sql.stderr
        assert sql.stdout.split() == ["n", "3"]
        stats = run_cli(ro_store, "stats")
        assert stats.returncode == 0, stats.stderr
        out = tmp_path / "out.json"
        export = run_cli(ro_store, "export", "-o", str(out))
        assert export.returncode == 0, export.stderr
        assert len(json.loads(out.read_text())["sessions"]) == 2
        check = run_cli(ro_store, "check")
        assert check.returncode == 0, check.stderr + check.stdout


class TestWritingToAReadOnlyStore:
    def test_writes_are_refused_with_a_store_error(self, ro_store: Path) -> None:
        with Store(ro_store) as s:
            attempts: list[tuple[str, Callable[[], object]]] = [
                ("create a session", lambda: s.create_session("gamma")),
                ("write to session 'alpha'", lambda: s.session("alpha").append("user", "x")),
                ("write to session 'beta'", lambda: s.delete_session("beta")),
                ("create a session", lambda: s.session("alpha").branch(branch_id="b2")),
                ("compact it", lambda: s.compact()),
                ("repair it", lambda: s.check(repair=True)),
                ("create a session", lambda: import_files(s, [CHATGPT])),
            ]
            for what, attempt in attempts:
                with pytest.raises(StoreError) as e:
                    attempt()
                assert str(e.value) == refusal(ro_store, what)
            assert s.session_ids() == ["alpha", "beta"]

    def test_the_cli_refuses_writes_in_one_line(self, ro_store: Path) -> None:
        for args, what in [
            (["add", "hi", "--session", "alpha"], "write to session 'alpha'"),
            (["new", "--id", "gamma"], "create a session"),
            (["compact"], "compact it"),
            (["check", "--repair"], "repair it"),
        ]:
            done = run_cli(ro_store, *args)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            assert done.stderr == f"error: {refusal(ro_store, what)}\n", args

    def test_creating_a_store_on_a_read_only_mount_is_refused(self, ro_store: Path) -> None:
        with pytest.raises(StoreError) as e:
            Store(ro_store / "sessions" / "alpha" / "inner")
        assert str(e.value) == (
            f"cannot create a store at {ro_store / 'sessions' / 'alpha' / 'inner'}: Read-only "
            "file system; choose a folder you can write to"
        )
