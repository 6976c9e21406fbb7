"""``convstore sync``: commit the store folder, merge what the remote has, push.

The format makes a plain ``git pull`` (a merge) of two clones conflict-free: every hot segment
has one writer, sealed files are immutable and named by their content, deletes and edits are
records (docs/FORMAT.md, section 8). ``sync`` keeps that promise and adds what plain git cannot
know about:

- it holds the store's compaction lock while it stages, commits and merges, so a commit never
  records half of a compaction (a new sealed file without the deletion of its inputs, or the
  reverse);
- an append may be in flight while git reads a hot segment: a torn tail is never committed;
  the segment is staged up to its last whole frame (the rest goes into the next sync), because
  a clone that receives a torn tail would repair it, i.e. change another writer's file;
- it merges, never rebases, and refuses to start when the repository has conflicts or other
  staged changes, saying what to do.

docs/SYNC.md describes the workflow for users.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import frames, layout
from .compaction import LOCK_TIMEOUT, compaction_lock
from .errors import SyncError
from .wording import plural

if TYPE_CHECKING:
    from .store import Store

__all__ = ["SyncError", "SyncReport", "find_repository", "sync"]

# Pushes that lose a race with another clone's push pull again and retry this many times.
_PUSH_TRIES = 3


@dataclass
class SyncReport:
    """What ``sync`` did."""

    repository: str
    store: str  # the store folder, relative to the repository ("." at its top)
    committed: str | None = None  # the commit made from local changes, if any
    files: int = 0  # paths in that commit
    remote: str | None = None  # "origin/main", or None when there is nothing to sync with
    reachable: bool | None = None  # whether the remote answered; None when none was asked
    pulled: bool = False
    updated: bool = False  # the pull brought commits (a fast-forward or a merge)
    merge: str | None = None  # the merge commit, when the pull made one
    pushed: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "store": self.store,
            "committed": self.committed,
            "files": self.files,
            "remote": self.remote,
            "reachable": self.reachable,
            "pulled": self.pulled,
            "updated": self.updated,
            "merge": self.merge,
            "pushed": self.pushed,
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        parts = [
            f"committed {plural(self.files, 'file')} ({self.committed[:10]})"
            if self.committed
            else "nothing to commit"
        ]
        if self.remote is None:
            parts.append("no remote to pull from or push to")
        elif self.reachable is False:
            # The note says why: offline is the usual case, and not an error.
            pass
        else:
            if self.merge:
                parts.append(f"merged {self.remote} ({self.merge[:10]})")
            elif self.updated:
                parts.append(f"fast-forwarded to {self.remote}")
            elif self.pulled:
                parts.append(f"{self.remote} had nothing new")
            if self.pushed:
                parts.append(f"pushed to {self.remote}")
        if self.reachable is False and self.notes:
            return "; ".join([*parts, self.notes[0]]) + "".join(f"\n  {n}" for n in self.notes[1:])
        return "; ".join(parts) + "".join(f"\n  {n}" for n in self.notes)


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    done = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, env=env, check=False
    )
    if check and done.returncode != 0:
        what = (done.stderr or done.stdout).strip().splitlines()
        raise SyncError(f"`git {' '.join(args)}` failed: {' / '.join(what[-3:]) or 'no output'}")
    return done


def find_repository(path: Path) -> Path | None:
    """The top folder of the git working tree holding ``path``, or None."""
    if shutil.which("git") is None:
        raise SyncError("git is not installed (or not on PATH); install it to sync a store")
    done = _git(path, "rev-parse", "--show-toplevel", check=False)
    if done.returncode != 0:
        return None
    return Path(done.stdout.strip()).resolve()


def sync(
    store: Store,
    *,
    message: str | None = None,
    pull: bool = True,
    push: bool = True,
    lock_timeout: float = LOCK_TIMEOUT,
) -> SyncReport:
    """Commit the store folder's changes, merge the upstream branch (no rebase), push.

    Without an upstream branch but with a remote (``origin``, or the only one), the current
    branch is pulled from and pushed to that remote, and becomes its upstream. Without any
    remote, ``sync`` only commits.
    """
    root = store.path.resolve()
    repo = find_repository(root)
    if repo is None:
        raise SyncError(
            f"{store.path} is not in a git repository; to sync it, run `git init` there and "
            "`git remote add origin URL` (docs/SYNC.md)"
        )
    rel = os.path.relpath(root, repo)
    report = SyncReport(str(repo), rel)
    _refuse_unfinished_work(repo, rel)
    try:
        with compaction_lock(store, lock_timeout):
            _commit(repo, rel, message, report)
            target = _upstream(repo, report)
            if target is not None and (pull or push):
                _exchange(repo, target, pull, push, report)
    except SyncError as e:
        e.report = report  # what was done before the failure (the CLI prints it with --json)
        raise
    # git makes the files and folders a merge brings 0644 and 0755 under the usual umask.
    layout.tighten_tree(store.path)
    if store._query is not None:
        store.refresh()  # the catalog and index learn what the merge brought
    return report


def _refuse_unfinished_work(repo: Path, rel: str) -> None:
    unmerged = _git(repo, "ls-files", "--unmerged").stdout.split("\n")
    conflicted = sorted({line.split("\t", 1)[1] for line in unmerged if "\t" in line})
    if conflicted:
        raise SyncError(
            f"the repository has unresolved conflicts in {', '.join(conflicted[:5])}"
            f"{' ...' if len(conflicted) > 5 else ''}; resolve them (or `git merge --abort`) "
            "before `convstore sync`"
        )
    for marker, what, undo in (
        ("MERGE_HEAD", "a merge", "git merge --abort"),
        ("rebase-merge", "a rebase", "git rebase --abort"),
        ("rebase-apply", "a rebase", "git rebase --abort"),
        ("CHERRY_PICK_HEAD", "a cherry-pick", "git cherry-pick --abort"),
    ):
        path = Path(_git(repo, "rev-parse", "--git-path", marker).stdout.strip())
        if not path.is_absolute():
            path = repo / path
        if path.exists():
            raise SyncError(
                f"the repository is in the middle of {what}; finish it or run `{undo}` "
                "before `convstore sync`"
            )
    staged = _git(repo, "diff", "--cached", "--name-only", "-z").stdout.split("\0")
    outside = [p for p in staged if p and not _inside(p, rel)]
    if outside:
        raise SyncError(
            f"changes outside the store are staged ({', '.join(outside[:3])}"
            f"{' ...' if len(outside) > 3 else ''}); commit or unstage them first, "
            "so that `convstore sync` commits the store only"
        )


def _inside(path: str, rel: str) -> bool:
    return rel == "." or path == rel or path.startswith(rel.rstrip("/") + "/")


def _commit(repo: Path, rel: str, message: str | None, report: SyncReport) -> None:
    _git(repo, "add", "--all", "--", rel)
    staged = _git(
        repo, "diff", "--cached", "--name-only", "--diff-filter=AM", "-z", "--", rel
    ).stdout.split("\0")
    for path in staged:
        if path and layout.HOT_RE.fullmatch(Path(path).name):
            _stage_whole_frames(repo, path)
    changed = [
        p for p in _git(repo, "diff", "--cached", "--name-only", "-z").stdout.split("\0") if p
    ]
    if not changed:
        return
    text = message or f"convstore sync from {socket.gethostname()}: {plural(len(changed), 'file')}"
    _git(repo, "commit", "--quiet", "--no-verify", "-m", text)
    report.committed = _git(repo, "rev-parse", "HEAD").stdout.strip()
    report.files = len(changed)


def _stage_whole_frames(repo: Path, path: str) -> None:
    """Stage a hot segment up to its last whole frame, leaving an append in flight out."""
    try:
        data = (repo / path).read_bytes()
    except FileNotFoundError:
        return
    valid = frames.scan(data, decompress=False).valid_end
    if valid == len(data):
        return
    blob = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=repo,
            input=data[:valid],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .strip()
    )
    _git(repo, "update-index", "--cacheinfo", f"100644,{blob},{path}")


def _upstream(repo: Path, report: SyncReport) -> tuple[str, str] | None:
    """(remote, branch) to pull from and push to, or None."""
    done = _git(repo, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}", check=False)
    branch = _git(repo, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
    if done.returncode == 0 and "/" in done.stdout:
        remote, _, upstream = done.stdout.strip().partition("/")
        report.remote = f"{remote}/{upstream}"
        return remote, upstream
    remotes = _git(repo, "remote").stdout.split()
    if not remotes:
        report.notes.append("no git remote: committed only (`git remote add origin URL`)")
        return None
    if branch == "HEAD":
        raise SyncError("the repository is on a detached HEAD; check out a branch to sync")
    remote = "origin" if "origin" in remotes else remotes[0]
    report.remote = f"{remote}/{branch}"
    return remote, branch


class _Unreachable(SyncError):
    """The remote did not answer (offline, a missing folder, refused credentials)."""


def _exchange(
    repo: Path, target: tuple[str, str], pull: bool, push: bool, report: SyncReport
) -> None:
    """Pull and push, or only note that the remote cannot be reached.

    Offline is the usual state of a local-first store, not a failure: what was committed stays
    committed, and the next sync that reaches the remote merges and pushes it.
    """
    try:
        has_branch = _remote_has(repo, target)
    except _Unreachable as e:
        report.reachable = False
        report.notes.append(
            f"{e}; the next `convstore sync` that reaches it pushes this clone's commits"
        )
        return
    report.reachable = True
    if pull:
        _pull(repo, target, report, has_branch)
    if push:
        _push(repo, target, pull, report)


def _remote_has(repo: Path, target: tuple[str, str]) -> bool:
    """Whether the remote has the branch; raises _Unreachable when the remote does not answer."""
    remote, branch = target
    done = _git(repo, "ls-remote", "--exit-code", "--heads", remote, branch, check=False)
    if done.returncode == 2:
        return False
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["git ls-remote failed"])[0]
        raise _Unreachable(f"{remote} is unreachable ({why.removeprefix('fatal: ')})")
    return True


def _pull(
    repo: Path, target: tuple[str, str], report: SyncReport, has_branch: bool | None = None
) -> None:
    remote, branch = target
    if not (_remote_has(repo, target) if has_branch is None else has_branch):
        report.notes.append(f"{remote} has no branch {branch} yet: nothing to merge")
        return
    before = _git(repo, "rev-parse", "HEAD", check=False).stdout.strip()
    done = _git(
        repo,
        "-c",
        "pull.rebase=false",
        "pull",
        "--no-rebase",
        "--no-edit",
        "--quiet",
        remote,
        branch,
        check=False,
    )
    if done.returncode != 0:
        conflicted = _git(repo, "diff", "--name-only", "--diff-filter=U").stdout.split()
        if conflicted:
            # Cannot happen between clones of format 2 (a file is changed or removed only by
            # the clone that owns it: FORMAT.md, section 8). Leave the tree as it was.
            _git(repo, "merge", "--abort", check=False)
            raise SyncError(
                f"merging {remote}/{branch} conflicts in {', '.join(conflicted[:5])}; the "
                "merge was aborted and nothing was lost (this clone's commits are intact). "
                "Clones of one store conflict only when one still runs convstore 0.1, when two "
                "machines share a writer id (a copied store: docs/SYNC.md, 'Copies of a "
                "store'), or when a file was edited by hand. Upgrade or fix that clone, then "
                "sync again"
            )
        raise SyncError(
            f"`git pull {remote} {branch}` failed: {(done.stderr or done.stdout).strip()}"
        )
    report.pulled = True
    head = _git(repo, "rev-parse", "HEAD").stdout.strip()
    parents = _git(repo, "rev-list", "--parents", "-n", "1", "HEAD").stdout.split()
    if head != before:
        report.updated = True
        if len(parents) > 2:
            report.merge = head


def _push(repo: Path, target: tuple[str, str], pull: bool, report: SyncReport) -> None:
    remote, branch = target
    for _ in range(_PUSH_TRIES):
        done = _git(repo, "push", "--quiet", "-u", remote, f"HEAD:{branch}", check=False)
        if done.returncode == 0:
            report.pushed = True
            return
        # "[rejected] ... (fetch first)": another clone pushed first. "[remote rejected]" (a
        # hook, a protected branch) is a refusal that no retry changes.
        rejected = "[rejected]" in done.stderr or "fetch first" in done.stderr
        if not (rejected and pull):
            why = " / ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
            raise SyncError(f"`git push {remote} {branch}` failed: {why}")
        _pull(repo, target, report)  # another clone pushed meanwhile: merge it, then retry
    raise SyncError(f"{remote}/{branch} kept moving while pushing; run `convstore sync` again")
