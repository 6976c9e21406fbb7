"""Two clones of a store in git: apart they append, compact, delete and edit; they merge cleanly.

Real git throughout: a bare repository and two clones in temporary folders, merged with
``git pull --no-rebase`` (a merge commit), both by plain git and by ``convstore sync``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from convstore import Store, frames, layout
from convstore.gitsync import SyncError, sync

from .conftest import run_python
from .test_compaction import folder_text

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user or system git configuration leaks in (pull.rebase, hooks, signing...)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    # A temporary folder inside someone's repository must still count as "not in git".
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "gitconfig").write_text("[init]\n\tdefaultBranch = main\n")


def git(cwd: Path, *args: str) -> str:
    # umask 077: the user keeps private files private. Under 022 git makes what it checks out
    # 0644/0755, which check() reports (test_private_files.py shows that case).
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, umask=0o077
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


@dataclass
class Clone:
    name: str
    path: Path
    store: Store

    def messages(self, sid: str) -> list[str]:
        return [m.text for m in self.store.session(sid).messages()]


def make_clone(tmp_path: Path, bare: Path, name: str) -> Clone:
    path = tmp_path / name
    git(tmp_path, "clone", "--quiet", str(bare), name)
    git(path, "config", "user.name", f"clone {name}")
    git(path, "config", "user.email", f"{name}@example.invalid")
    return Clone(name, path, Store(path))


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    git(tmp_path, "init", "--quiet", "--bare", "remote.git")
    return tmp_path / "remote.git"


@pytest.fixture
def pair(tmp_path: Path, remote: Path) -> Iterator[tuple[Clone, Clone]]:
    """Clone A starts the store and pushes it; clone B clones it. Each has its own writer id."""
    a = make_clone(tmp_path, remote, "a")
    shared = a.store.create_session("shared", title="shared")
    for i in range(3):
        shared.append("user", f"base-{i}")
    a.store.create_session("doomed").append("user", "doomed-base")
    a.store.close()
    git(a.path, "add", "--all")
    git(a.path, "commit", "--quiet", "-m", "a store")
    git(a.path, "push", "--quiet", "origin", "HEAD:main")
    b = make_clone(tmp_path, remote, "b")
    assert a.store.writer_id != b.store.writer_id
    yield a, b
    a.store.close()
    b.store.close()


def git_sync(clone: Clone) -> None:
    """What a user does by hand: commit everything, merge (no rebase), push."""
    git(clone.path, "add", "--all")
    if git(clone.path, "status", "--porcelain"):
        git(clone.path, "commit", "--quiet", "-m", f"from {clone.name}")
    git(clone.path, "pull", "--quiet", "--no-rebase", "--no-edit", "origin", "main")
    git(clone.path, "push", "--quiet", "origin", "HEAD:main")


def convstore_sync(clone: Clone) -> None:
    sync(clone.store)


def work_apart(a: Clone, b: Clone) -> dict[str, str]:
    """Both clones write while apart; returns ids of the messages the scenario changes."""
    base = {m.text: m.id for m in a.store.session("shared").messages()}
    # A: appends, compaction (which seals A's segment that B already has), a new session,
    # then deletes a session that B is writing to.
    shared_a = a.store.session("shared")
    shared_a.append("user", "from-a-1")
    shared_a.append("assistant", "from-a-2")
    a.store.create_session("a-only").append("user", "a-only-msg")
    a.store.compact()
    a.store.delete_session("doomed")
    a.store.compact("doomed")
    # B: appends to the same session and to the session A deletes, compacts, then edits a
    # message that now sits in A's sealed file on the other side.
    shared_b = b.store.session("shared")
    shared_b.append("user", "from-b-1")
    b.store.create_session("b-only").append("user", "b-only-msg")
    b.store.session("doomed").append("user", "doomed-from-b")
    b.store.compact()
    shared_b.edit(base["base-1"], "base-1 edited by b")
    shared_b.append("assistant", "from-b-2")
    return base


EXPECTED_SHARED = [
    "base-0",
    "base-1 edited by b",
    "base-2",
    "from-a-1",
    "from-a-2",
    "from-b-1",
    "from-b-2",
]


def assert_converged(a: Clone, b: Clone) -> None:
    for clone in (a, b):
        shared = clone.store.session("shared")
        texts = [m.text for m in shared.messages()]
        ids = [m.id for m in shared.messages()]
        assert sorted(texts) == sorted(EXPECTED_SHARED), clone.name
        assert len(ids) == len(set(ids)) == len(EXPECTED_SHARED)
        assert clone.messages("a-only") == ["a-only-msg"]
        assert clone.messages("b-only") == ["b-only-msg"]
        # A deleted "doomed" while B, which had not seen the delete, kept writing to it: the
        # delete covers what was written before it, and B's later message is not lost.
        assert clone.messages("doomed") == ["doomed-from-b"]
        assert clone.store.check().ok, str(clone.store.check())
        assert not git(clone.path, "ls-files", "--unmerged")
    assert [m.id for m in a.store.session("shared").messages()] == [
        m.id for m in b.store.session("shared").messages()
    ]
    if importlib.util.find_spec("convstore.query") is not None:
        for clone in (a, b):
            clone.store.refresh()
        assert a.store.stats() == b.store.stats()
        for word in ("from-a-1", "edited", "doomed-from-b", "base-1"):
            hits_a = [h.message_id for h in a.store.search(word)]
            hits_b = [h.message_id for h in b.store.search(word)]
            assert hits_a == hits_b, word


@pytest.mark.parametrize("first", ["a", "b"])
@pytest.mark.parametrize("syncer", [git_sync, convstore_sync], ids=["plain-git", "convstore-sync"])
class TestTwoClones:
    def test_work_done_apart_merges_with_no_conflict_and_nothing_lost(
        self, pair: tuple[Clone, Clone], first: str, syncer: object
    ) -> None:
        a, b = pair
        assert callable(syncer)
        one, two = (a, b) if first == "a" else (b, a)
        # A's first segment of "shared": B has it from the clone; A seals and deletes it below.
        (a_segment,) = (b.path / "sessions" / "shared").glob(f"hot.{a.store.writer_id}.*")
        work_apart(a, b)
        syncer(one)
        syncer(two)  # merges one's work: a merge commit
        syncer(one)
        merges = git(two.path, "rev-list", "--merges", "HEAD").split()
        assert merges, "the second clone's pull made no merge commit"
        assert not a_segment.exists()  # the deletion travelled; its records live on, sealed
        assert_converged(a, b)

        # Compact again on both sides, after the merge: each seals what it owns and purges
        # what the delete covers from its own files.
        for clone in (two, one):
            clone.store.compact()
            syncer(clone)
        syncer(two)
        assert_converged(a, b)
        for clone in (a, b):
            doomed = clone.path / "sessions" / "doomed"
            assert "doomed-from-b" in folder_text(doomed)
            assert "doomed-base" not in folder_text(doomed)
            shared = clone.path / "sessions" / "shared"
            # The content replaced by the edit is gone from the files of both clones.
            assert "base-1\n" not in folder_text(shared).replace("base-1 edited", "")
            assert len(list(shared.glob("sealed.*"))) <= 2
        # Sealed files stay bounded: one per session per clone that compacted it, since a
        # clone only ever replaces its own.
        two.store.compact()
        syncer(two)
        syncer(one)
        for clone in (a, b):
            sealed = list((clone.path / "sessions" / "shared").glob("sealed.*"))
            owners = [str(layout.owner(p.name)) for p in sealed]
            assert sorted(owners) == sorted({a.store.writer_id, b.store.writer_id})
        assert_converged(a, b)


class TestConvstoreSync:
    def test_a_folder_outside_git_is_refused_with_what_to_do(self, store: Store) -> None:
        with pytest.raises(SyncError, match="not in a git repository; to sync it, run `git init`"):
            sync(store)

    def test_unresolved_conflicts_are_refused(self, pair: tuple[Clone, Clone]) -> None:
        a, b = pair
        for clone, text in ((a, "from a"), (b, "from b")):
            (clone.path / "notes.txt").write_text(text)
            git(clone.path, "add", "notes.txt")
            git(clone.path, "commit", "--quiet", "-m", "notes")
        git(a.path, "push", "--quiet", "origin", "HEAD:main")
        done = subprocess.run(
            ["git", "pull", "--no-rebase", "--no-edit", "origin", "main"],
            cwd=b.path,
            capture_output=True,
            check=False,
        )
        assert done.returncode != 0  # a conflict in a file that is not the store's
        with pytest.raises(SyncError, match=r"unresolved conflicts in notes\.txt"):
            sync(b.store)

    def test_other_staged_changes_are_refused(self, tmp_path: Path) -> None:
        repo = tmp_path / "repo"
        repo.mkdir()
        git(repo, "init", "--quiet")
        (repo / "readme.txt").write_text("hello")
        git(repo, "add", "readme.txt")
        with Store(repo / "store") as st, pytest.raises(SyncError, match=r"readme\.txt"):
            sync(st)

    def test_without_a_remote_it_commits_only(self, tmp_path: Path) -> None:
        repo = tmp_path / "repo"
        repo.mkdir()
        git(repo, "init", "--quiet")
        git(repo, "config", "user.name", "me")
        git(repo, "config", "user.email", "me@example.invalid")
        with Store(repo / "store") as st:
            st.create_session("s").append("user", "hi")
            report = sync(st)
            assert report.committed and report.remote is None and not report.pushed
            assert report.store == "store"
            assert "no git remote" in str(report)
            tracked = git(repo, "ls-files").split()
            assert "store/convstore.json" in tracked
            assert not any(".cache" in p for p in tracked)
            assert sync(st).committed is None

    def test_an_append_in_flight_is_never_committed_torn(self, pair: tuple[Clone, Clone]) -> None:
        a, _ = pair
        a.store.session("shared").append("user", "whole")
        a.store.flush()
        segment = max((a.path / "sessions" / "shared").glob(f"hot.{a.store.writer_id}.*"))
        whole = segment.read_bytes()
        frame = frames.encode_frame(b'{"half": "written"}\n', frames.new_compressor())
        with open(segment, "ab") as fh:  # what an append half-way through its write looks like
            fh.write(frame[: len(frame) // 2])
        assert frames.scan(segment.read_bytes()).torn is not None
        sync(a.store)
        committed = subprocess.run(
            ["git", "show", f"HEAD:{segment.relative_to(a.path)}"],
            cwd=a.path,
            capture_output=True,
            check=True,
        ).stdout
        assert committed == whole
        assert frames.scan(committed).torn is None
        assert layout.HOT_RE.fullmatch(segment.name)

    def test_a_first_sync_sets_the_upstream_and_a_second_finds_nothing(
        self, pair: tuple[Clone, Clone]
    ) -> None:
        _, b = pair
        b.store.session("shared").append("user", "hello")
        first = sync(b.store)
        assert first.committed and first.pushed and first.remote == "origin/main"
        second = sync(b.store)
        assert second.committed is None and second.pushed
        said = "nothing to commit; origin/main had nothing new; pushed to origin/main"
        assert str(second) == said
        assert os.path.exists(b.path / ".gitignore")


def offline_repo(tmp_path: Path, remote: str) -> Path:
    """A repository with a store whose only remote, origin, cannot be reached."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    git(repo, "config", "user.name", "me")
    git(repo, "config", "user.email", "me@example.invalid")
    git(repo, "remote", "add", "origin", remote)
    with Store(repo / "store") as st:
        st.create_session("s").append("user", "written on a plane")
    return repo


class TestOffline:
    @pytest.mark.parametrize("url", ["file:///nonexistent/remote.git", "missing-folder"])
    def test_an_unreachable_remote_commits_and_says_it_will_push_later(
        self, tmp_path: Path, url: str
    ) -> None:
        repo = offline_repo(tmp_path, url if "://" in url else str(tmp_path / url))
        with Store(repo / "store") as st:
            report = sync(st)
        assert report.committed == git(repo, "rev-parse", "HEAD").strip()
        assert report.remote == "origin/main"
        assert report.reachable is False and not report.pulled and not report.pushed
        assert str(report).startswith(f"committed {report.files} files ({report.committed[:10]})")
        assert "origin is unreachable" in str(report)
        assert "the next `convstore sync` that reaches it pushes" in str(report)

    def test_the_command_exits_0_and_its_json_says_what_was_committed(self, tmp_path: Path) -> None:
        repo = offline_repo(tmp_path, "file:///nonexistent/remote.git")
        store = str(repo / "store")
        main = "from convstore.cli import main; main()"
        done = run_python(main, "sync", "--store", store, "--json")
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        body = json.loads(done.stdout)
        assert body["committed"] == git(repo, "rev-parse", "HEAD").strip()
        assert body["reachable"] is False and body["pushed"] is False
        assert any("origin is unreachable" in note for note in body["notes"])
        text = run_python(
            "from convstore.cli import main; main()", "sync", "--store", str(repo / "store")
        )
        assert text.returncode == 0, text.stderr
        assert text.stdout.startswith("nothing to commit; origin is unreachable")

    def test_without_push_an_unreachable_remote_is_still_only_a_note(self, tmp_path: Path) -> None:
        repo = offline_repo(tmp_path, "file:///nonexistent/remote.git")
        with Store(repo / "store") as st:
            report = sync(st, pull=False)
        assert report.committed and report.reachable is False


class TestSyncCommand:
    def test_a_refused_push_exits_1_and_its_json_still_says_what_was_committed(
        self, tmp_path: Path, remote: Path
    ) -> None:
        hook = remote / "hooks" / "pre-receive"
        hook.write_text("#!/bin/sh\necho 'pushes are closed today' >&2\nexit 1\n")
        hook.chmod(0o755)
        repo = offline_repo(tmp_path, str(remote))
        main = "from convstore.cli import main; main()"
        done = run_python(main, "sync", "--store", str(repo / "store"), "--json")
        assert done.returncode == 1
        body = json.loads(done.stdout)
        assert body["committed"] == git(repo, "rev-parse", "HEAD").strip()
        assert body["reachable"] is True and body["pushed"] is False
        assert "pushes are closed today" in body["error"]
        assert done.stderr.startswith("error: `git push origin main` failed")
        assert len(done.stderr.strip().splitlines()) == 1

    def test_outside_git_it_exits_1_with_one_line_saying_what_to_do(self, store_path: Path) -> None:
        Store(store_path).close()
        done = run_python(
            "from convstore.cli import main; main()", "sync", "--store", str(store_path)
        )
        assert done.returncode == 1
        assert done.stderr.startswith("error: ") and "run `git init` there" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1

    def test_json_reports_the_commit_and_the_push(self, pair: tuple[Clone, Clone]) -> None:
        _, b = pair
        b.store.session("shared").append("user", "from the command line")
        b.store.close()
        done = run_python(
            "from convstore.cli import main; main()", "sync", "--store", str(b.path), "--json"
        )
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["committed"] and body["pushed"] and body["remote"] == "origin/main"


class TestARetiredClone:
    def test_its_segments_stay_readable_and_only_it_removes_them_with_no_conflict(
        self, pair: tuple[Clone, Clone]
    ) -> None:
        a, b = pair
        b.store.close()
        # B writes enough for its segments to roll (closed by an end marker), without sealing
        # them itself, syncs, and is not used for a while.
        retired = Store(b.path, roll_bytes=2048, auto_compact=False)
        shared = retired.session("shared")
        for i in range(40):
            shared.append("user", f"from-b-{i} " + "x" * 100)
        retired.close()
        git_sync(b)
        git_sync(a)
        folder = a.path / "sessions" / "shared"
        b_hot = sorted(folder.glob(f"hot.{retired.writer_id}.*"))
        closed = [p for p in b_hot if frames.scan(p.read_bytes(), decompress=False).closed]
        assert len(closed) >= 2, "B's segments did not roll"
        before = a.messages("shared")

        # A compacts: B's files are read, never removed (only their owner may remove them, so
        # two clones can never both replace one file, which git reports as a conflict).
        a.store.compact("shared")
        assert all(p.exists() for p in b_hot)
        assert a.messages("shared") == before
        git_sync(a)

        # B comes back: it seals its own closed segments, and both sides merge cleanly.
        b2 = Clone("b", b.path, Store(b.path))
        git_sync(b2)
        b2.store.compact("shared")
        git_sync(b2)
        git_sync(a)
        assert not git(b.path, "ls-files", "--unmerged")
        assert not git(a.path, "ls-files", "--unmerged")
        assert not any(p.exists() for p in closed), "B did not seal its closed segments"
        assert b2.messages("shared") == before == a.messages("shared")
        assert b2.store.check().ok, str(b2.store.check())
        b2.store.close()
