"""A store is private whatever the umask: folders 0700, files 0600 (docs/FORMAT.md, "Modes").

The tests run as root, so "another user cannot read" is shown by the modes, and, where the
system has ``setpriv``, by really trying as the unprivileged user ``nobody``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from convstore import Store
from convstore.gitsync import sync
from tests.fixtures.cli import cli, ok, ok_json


def walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry below ``root`` (and ``root``), without following links; ``.git`` is git's."""
    yield root, os.lstat(root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in dirs + files:
            path = Path(folder) / name
            yield path, os.lstat(path)


def loose(root: Path) -> list[str]:
    """Entries whose mode is not exactly 0700 (folders) or 0600 (files)."""
    out = []
    for path, st in walk(root):
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            out.append(f"{path.relative_to(root)} {stat.S_IMODE(st.st_mode):o}")
    return out


def fill(path: Path) -> None:
    """Use every part of a store that writes: append, roll, compact, query, search, check."""
    with Store(path, roll_bytes=2000, auto_compact=False) as s:
        a = s.create_session("alpha", title="private things")
        for i in range(40):
            a.append("user", f"secret number {i} about the garden")
        s.create_session("beta").append("assistant", "another secret")
        s.compact()
        a.append("user", "after the seal")
        assert s.sql("SELECT count(*) AS n FROM messages").rows[0][0] == 42
        assert s.search("garden")
        a.append("user", "a refresh after the first build: an incremental part")
        assert s.search("refresh")
        assert s.check().ok


@pytest.fixture(params=[0o000, 0o022], ids=["umask-000", "umask-022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


class TestModes:
    def test_every_folder_is_0700_and_every_file_0600_whatever_the_umask(
        self, tmp_path: Path, umask: int
    ) -> None:
        path = tmp_path / "store"
        fill(path)
        assert loose(path) == []

    def test_the_process_umask_is_left_as_it_was(self, tmp_path: Path, umask: int) -> None:
        fill(tmp_path / "store")
        assert os.umask(umask) == umask

    def test_a_store_made_in_an_existing_open_folder_is_made_private(
        self, tmp_path: Path, umask: int
    ) -> None:
        path = tmp_path / "store"
        path.mkdir()
        path.chmod(0o755)
        Store(path).close()
        assert loose(path) == []

    def test_an_export_is_written_0600(self, tmp_path: Path, umask: int) -> None:
        path = tmp_path / "store"
        fill(path)
        for fmt in ("jsonl", "parquet"):
            dest = tmp_path / f"out.{fmt}"
            ok(path, "export", "--format", fmt, "--output", str(dest))
            assert stat.S_IMODE(dest.stat().st_mode) == 0o600, fmt

    def test_a_writer_tightens_the_session_folder_and_segment_it_writes_to(
        self, tmp_path: Path
    ) -> None:
        # What a git checkout leaves under the usual umask: 0755 folders, 0644 files.
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "hello")
        folder = path / "sessions" / "alpha"
        folder.chmod(0o755)
        segments = list(folder.iterdir())
        for seg in segments:
            seg.chmod(0o644)
        with Store(path) as s:
            s.session("alpha").append("user", "again")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for seg in segments:
            assert stat.S_IMODE(seg.stat().st_mode) == 0o600

    def test_a_lock_file_left_open_by_an_older_version_is_tightened(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        with Store(path) as s:
            s.create_session("alpha").append("user", "hello")
        lock = path / ".cache" / "locks" / "sessions" / "alpha.lock"
        lock.chmod(0o644)
        lock.parent.chmod(0o755)
        with Store(path) as s:
            s.session("alpha").append("user", "again")
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert stat.S_IMODE(lock.parent.stat().st_mode) == 0o700


def _loosen(path: Path) -> list[Path]:
    """What a git checkout under umask 022 produces: every folder 0755, every file 0644."""
    changed = []
    for p, st in walk(path):
        p.chmod(0o755 if stat.S_ISDIR(st.st_mode) else 0o644)
        changed.append(p)
    return changed


class TestCheckModes:
    def test_check_names_every_loose_path_its_mode_and_the_fix(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path)
        changed = _loosen(path)
        with Store(path) as s:
            report = s.check()
        assert not report.ok
        by_path = {i.path: i.problem for i in report.issues}
        # Opening the store tightens the folders it uses at once (sessions/ and the lock
        # folders); every other path must be reported.
        tightened_at_open = {path, path / "sessions", path / ".cache", path / ".cache" / "locks"}
        tightened_at_open.add(path / ".cache" / "locks" / "sessions")
        assert set(changed) > tightened_at_open
        for p in changed:
            if p in tightened_at_open:
                assert stat.S_IMODE(p.stat().st_mode) == 0o700
                continue
            assert str(p) in by_path, p
            problem = by_path[str(p)]
            want = "0700" if p.is_dir() else "0600"
            have = "0755" if p.is_dir() else "0644"
            assert f"mode {have}" in problem and want in problem, problem
            assert "check --repair" in problem or "chmod" in problem, problem

    def test_check_repair_tightens_every_mode_and_then_check_is_clean(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path)
        _loosen(path)
        with Store(path) as s:
            repaired = s.check(repair=True)
            assert repaired.ok and repaired.issues and all(i.repaired for i in repaired.issues)
            assert s.check().issues == []
        assert loose(path) == []

    def test_check_reports_a_loose_store_root(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        with Store(path) as s:
            path.chmod(0o755)
            assert [i.path for i in s.check().issues] == [str(path)]

    def test_opening_a_store_makes_its_root_0700_first(self, tmp_path: Path) -> None:
        # A fresh git clone is 0755: once the root is 0700, nothing below it is reachable.
        path = tmp_path / "store"
        Store(path).close()
        path.chmod(0o755)
        Store(path).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o700

    def test_git_folder_modes_are_not_ours_to_report(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path)
        (path / ".git" / "objects").mkdir(parents=True)
        (path / ".git" / "objects").chmod(0o755)
        (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (path / ".git" / "HEAD").chmod(0o644)
        with Store(path) as s:
            assert s.check().issues == []

    def test_the_cli_reports_loose_modes_and_repairs_them(self, tmp_path: Path) -> None:
        path = tmp_path / "store"
        fill(path)
        seg = next((path / "sessions" / "alpha").glob("hot.*"))
        seg.chmod(0o644)
        result = cli(path, "check")
        assert result.exit_code == 1
        assert f"{seg}: mode 0644" in result.stdout
        assert "0600" in result.stdout
        assert "Traceback" not in result.stdout + result.stderr
        ok(path, "check", "--repair")
        assert ok_json(path, "check")["issues"] == []
        assert stat.S_IMODE(seg.stat().st_mode) == 0o600


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv is not installed: cannot run a command as another user")
    if os.geteuid() != 0:
        pytest.skip("not root: cannot switch to another user")
    cmd = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


class TestAnotherUser:
    @pytest.fixture
    def open_store(self, umask: int) -> Iterator[Path]:
        # nobody must be able to reach the store's parent (pytest's tmp_path is under a 0700
        # folder), so that only the store's own modes stand in the way.
        parent = Path(tempfile.mkdtemp(prefix="convstore-modes-", dir="/tmp"))
        try:
            parent.chmod(0o755)
            path = parent / "store"
            fill(path)
            yield path
        finally:
            shutil.rmtree(parent)

    def test_another_user_cannot_read_a_segment(self, open_store: Path) -> None:
        seg = next((open_store / "sessions" / "alpha").glob("*.parquet"))
        got = _as_nobody("cat", str(seg))
        assert got.returncode != 0
        assert "Permission denied" in got.stderr

    def test_another_user_cannot_hold_a_session_lock(self, open_store: Path) -> None:
        if shutil.which("flock") is None:
            pytest.skip("flock(1) is not installed")
        lock = open_store / ".cache" / "locks" / "sessions" / "alpha.lock"
        assert lock.exists()
        got = _as_nobody("flock", "--nonblock", str(lock), "true")
        assert got.returncode != 0
        assert "Permission denied" in got.stderr

    def test_another_user_cannot_read_the_catalog(self, open_store: Path) -> None:
        base = next((open_store / ".cache" / "catalog").glob("base.*.duckdb"))
        got = _as_nobody("cat", str(base))
        assert got.returncode != 0
        assert "Permission denied" in got.stderr


class TestGit:
    @pytest.fixture(autouse=True)
    def isolated_git(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        if shutil.which("git") is None:
            pytest.skip("git is not installed")
        monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
        monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
        monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
        (tmp_path / "gitconfig").write_text(
            "[init]\n\tdefaultBranch = main\n[user]\n\tname = t\n\temail = t@example.invalid\n"
        )

    def test_sync_leaves_what_a_merge_brought_private(self, tmp_path: Path) -> None:
        def git(cwd: Path, *args: str) -> None:
            subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)

        old = os.umask(0o022)  # the usual umask: git makes files 0644 and folders 0755
        try:
            git(tmp_path, "init", "--quiet", "--bare", "remote.git")
            git(tmp_path, "clone", "--quiet", "remote.git", "a")
            with Store(tmp_path / "a") as a:
                a.create_session("ant").append("user", "from a")
                sync(a)
            git(tmp_path, "clone", "--quiet", "remote.git", "b")
            with Store(tmp_path / "b") as b:
                b.create_session("bee").append("user", "from b")
                sync(b)
            with Store(tmp_path / "a") as a:
                sync(a)
                assert (tmp_path / "a" / "sessions" / "bee").is_dir()
                assert loose(tmp_path / "a") == []
                assert a.check().issues == []
        finally:
            os.umask(old)
