"""Several clones of one store in git, working apart at random and merging in random orders.

Each round, every clone does a few random operations on a shared pool of session ids (append,
extend, create, edit, delete a message, branch, delete a session, compact one session or all,
prune), then the clones sync one after another in a random order, each by `convstore sync`
or by plain git (``git add --all; git commit; git pull --no-rebase; git push``) with git's
default merge settings (rename detection on). After the last round every clone syncs until
all agree. What must hold:

- no merge ever conflicts (``git pull`` succeeds and ``git ls-files --unmerged`` is empty);
- every clone ends with the same view of every session;
- no acknowledged message is lost: each one is visible in its session, unless a ``delete``
  record targets it or a ``drop`` of its session was written after it (FORMAT.md, section 5);
- ``check()`` finds nothing wrong in any clone.

Reproduce: ``python -m benchmarks.multiclone --clones 3 --rounds 30 --seed 7``. The test suite
runs a short form (tests/test_multiclone.py); the reliability campaign a long one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from convstore import Store, frames, layout
from convstore.errors import ConvstoreError
from convstore.gitsync import sync
from convstore.sealed import read_sealed

SESSIONS = [f"s{i}" for i in range(6)]


@dataclass
class Tally:
    """What a run did and found."""

    seed: int
    clones: int
    rounds: int = 0
    operations: int = 0
    acknowledged: int = 0
    syncs: int = 0
    merges: int = 0
    compactions: int = 0
    conflicts: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    check_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.conflicts or self.lost or self.diverged or self.check_problems)

    def __str__(self) -> str:
        head = (
            f"seed {self.seed}: {self.clones} clones, {self.rounds} rounds, {self.operations} "
            f"operations, {self.acknowledged} messages acknowledged, {self.syncs} syncs, "
            f"{self.merges} merge commits, {self.compactions} compactions, "
            f"{len(self.conflicts)} conflicts, {len(self.lost)} lost, "
            f"{len(self.diverged)} diverged, {len(self.check_problems)} check problems "
            f"({self.seconds:.1f} s)"
        )
        details = [*self.conflicts, *self.lost, *self.diverged, *self.check_problems]
        return "\n".join([head, *(f"  {d}" for d in details[:20])])


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd}: {done.stderr.strip()}")
    return done


@contextmanager
def isolated_git(home: Path) -> Iterator[None]:
    """No user or system git configuration leaks in: git's defaults, as the issue demands."""
    saved = {k: os.environ.get(k) for k in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM")}
    config = home / "gitconfig"
    config.write_text("[init]\n\tdefaultBranch = main\n")
    os.environ["GIT_CONFIG_GLOBAL"] = str(config)
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Clone:
    name: str
    path: Path
    store: Store
    # message id -> session id, for every message an append acknowledged in this clone
    acked: dict[str, str] = field(default_factory=dict)


class World:
    def __init__(self, root: Path, clones: int, seed: int, roll_bytes: int = 4096) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.tally = Tally(seed, clones)
        self.roll_bytes = roll_bytes
        self.remote = root / "remote.git"
        git(root, "init", "--quiet", "--bare", str(self.remote))
        first = self._clone("c0")
        first.store.create_session("s0", title="the first session").append("user", "hello")
        first.acked.update({m.id: "s0" for m in first.store.session("s0").messages()})
        git(first.path, "add", "--all")
        git(first.path, "commit", "--quiet", "-m", "a store")
        git(first.path, "push", "--quiet", "origin", "HEAD:main")
        self.clones = [first] + [self._clone(f"c{i}") for i in range(1, clones)]

    def _clone(self, name: str) -> Clone:
        path = self.root / name
        git(self.root, "clone", "--quiet", str(self.remote), name)
        git(path, "config", "user.name", f"clone {name}")
        git(path, "config", "user.email", f"{name}@example.invalid")
        return Clone(name, path, Store(path, roll_bytes=self.roll_bytes))

    def close(self) -> None:
        for c in self.clones:
            c.store.close()

    # -- work apart ------------------------------------------------------------------------

    def work(self, clone: Clone, operations: int) -> None:
        for _ in range(operations):
            op = self.rng.choices(list(self._ops), weights=[w for w, _ in self._ops.values()])[0]
            self.tally.operations += 1
            # A refusal (a deleted session, a message deleted meanwhile) writes nothing.
            with contextlib.suppress(ConvstoreError):
                self._ops[op][1](self, clone)

    def _live(self, clone: Clone) -> list[str]:
        return [s for s in clone.store.session_ids() if s in clone.store]

    def _append(self, clone: Clone) -> None:
        sid = self.rng.choice(SESSIONS)
        if sid not in clone.store:
            return
        text = f"{clone.name} says {self.rng.random():.6f} " + "x" * self.rng.randrange(0, 400)
        m = clone.store.session(sid).append(self.rng.choice(["user", "assistant"]), text)
        clone.acked[m.id] = sid
        self.tally.acknowledged += 1

    def _extend(self, clone: Clone) -> None:
        sid = self.rng.choice(SESSIONS)
        if sid not in clone.store:
            return
        batch = [{"role": "user", "content": f"{clone.name} batch {i}"} for i in range(5)]
        for m in clone.store.session(sid).extend(batch):
            clone.acked[m.id] = sid
            self.tally.acknowledged += 1

    def _create(self, clone: Clone) -> None:
        sid = self.rng.choice(SESSIONS)
        if sid in clone.store:
            return
        try:
            s = clone.store.create_session(sid, title=f"made by {clone.name}")
        except ConvstoreError:
            return  # deleted before: the id cannot be used again
        m = s.append("system", "you are helpful")
        clone.acked[m.id] = sid
        self.tally.acknowledged += 1

    def _pick_message(self, clone: Clone) -> tuple[str, str] | None:
        live = self._live(clone)
        if not live:
            return None
        sid = self.rng.choice(live)
        own = [m.id for m in clone.store.session(sid).messages() if m.session_id == sid]
        return (sid, self.rng.choice(own)) if own else None

    def _edit(self, clone: Clone) -> None:
        picked = self._pick_message(clone)
        if picked:
            clone.store.session(picked[0]).edit(picked[1], f"edited by {clone.name}")

    def _delete_message(self, clone: Clone) -> None:
        picked = self._pick_message(clone)
        if picked:
            clone.store.session(picked[0]).delete_message(picked[1])

    def _branch(self, clone: Clone) -> None:
        picked = self._pick_message(clone)
        target = self.rng.choice(SESSIONS)
        if picked and target not in clone.store and target != picked[0]:
            try:
                clone.store.branch(picked[0], picked[1], branch_id=target)
            except ConvstoreError:
                return
            m = clone.store.session(target).append("user", f"on a branch by {clone.name}")
            clone.acked[m.id] = target
            self.tally.acknowledged += 1

    def _delete_session(self, clone: Clone) -> None:
        live = self._live(clone)
        if live and self.rng.random() < 0.5:
            clone.store.delete_session(self.rng.choice(live))

    def _compact_one(self, clone: Clone) -> None:
        sid = self.rng.choice(SESSIONS)
        if (clone.path / "sessions" / sid).is_dir():
            clone.store.compact(sid)
            self.tally.compactions += 1

    def _compact_all(self, clone: Clone) -> None:
        clone.store.compact()
        self.tally.compactions += 1

    def _prune(self, clone: Clone) -> None:
        # A cutoff a moment ago: deletes most of what exists, drops idle sessions.
        back = self.rng.choice(["1s", "3s", "10s"])
        clone.store.prune(back)

    _ops: ClassVar[dict[str, tuple[float, Callable[[World, Clone], None]]]] = {
        "append": (30, _append),
        "extend": (8, _extend),
        "create": (8, _create),
        "edit": (8, _edit),
        "delete_message": (6, _delete_message),
        "branch": (4, _branch),
        "delete_session": (2, _delete_session),
        "compact_one": (10, _compact_one),
        "compact_all": (4, _compact_all),
        "prune": (1, _prune),
    }

    # -- merging ---------------------------------------------------------------------------

    def sync(self, clone: Clone, how: str) -> None:
        self.tally.syncs += 1
        before = _merges(clone.path)
        if how == "convstore":
            try:
                sync(clone.store)
            except ConvstoreError as e:
                self._conflict(clone, f"convstore sync: {e}")
        else:
            from convstore.compaction import wait_for_background

            wait_for_background(clone.store)
            git(clone.path, "add", "--all")
            if git(clone.path, "status", "--porcelain").stdout:
                git(clone.path, "commit", "--quiet", "-m", f"from {clone.name}")
            pulled = git(
                clone.path, "pull", "--quiet", "--no-rebase", "--no-edit", "origin", "main",
                check=False,
            )  # fmt: skip
            if pulled.returncode != 0:
                self._conflict(clone, f"git pull: {pulled.stdout.strip()} {pulled.stderr.strip()}")
            else:
                git(clone.path, "push", "--quiet", "origin", "HEAD:main")
        self.tally.merges += _merges(clone.path) - before

    def _conflict(self, clone: Clone, what: str) -> None:
        unmerged = git(clone.path, "ls-files", "--unmerged").stdout
        self.tally.conflicts.append(
            f"round {self.tally.rounds}, {clone.name}: {what[:300]} {unmerged[:300]}"
        )
        # Leave the clone usable for the rest of the run: take the remote's side, then go on.
        git(clone.path, "merge", "--abort", check=False)
        git(clone.path, "reset", "--quiet", "--hard", "origin/main", check=False)

    def round(self, operations: int) -> None:
        self.tally.rounds += 1
        for clone in self.clones:
            self.work(clone, self.rng.randrange(1, operations + 1))
        order = list(self.clones)
        self.rng.shuffle(order)
        for clone in order:
            self.sync(clone, self.rng.choice(["convstore", "git"]))

    def settle(self) -> None:
        for _ in range(2):
            for clone in self.clones:
                self.sync(clone, "convstore")

    # -- what must hold --------------------------------------------------------------------

    def verify(self) -> None:
        views = {c.name: _views(c.store) for c in self.clones}
        first = self.clones[0].name
        for name, view in views.items():
            if view != views[first]:
                diff = sorted(
                    k for k in set(view) | set(views[first]) if view.get(k) != views[first].get(k)
                )
                self.tally.diverged.append(f"{name} differs from {first} in {diff}")  # fmt: skip
        deletes, drops = _tombstones(self.clones[0].path)
        view = views[first]
        for clone in self.clones:
            for mid, sid in clone.acked.items():
                visible = mid in view.get(sid, {})
                gone = mid in deletes or any(d > mid for d in drops.get(sid, []))
                if not visible and not gone:
                    self.tally.lost.append(f"{clone.name}: message {mid} of {sid} is not visible")
                elif visible and mid in deletes:
                    self.tally.lost.append(f"{clone.name}: deleted message {mid} is visible")
        for clone in self.clones:
            clone.store.refresh()
            # The SQL catalog shows what the sessions show, revived sessions included.
            rows = clone.store.sql("SELECT session_id, id FROM messages").rows
            in_sql = {(str(r[0]), str(r[1])) for r in rows}
            shown = {(sid, mid) for sid, msgs in view.items() for mid in msgs}
            if in_sql != shown:
                self.tally.diverged.append(
                    f"{clone.name}: SQL differs from the sessions: {sorted(in_sql ^ shown)[:5]}"
                )
            report = clone.store.check()
            if not report.ok:
                self.tally.check_problems.append(f"{clone.name}: {report}")
            if git(clone.path, "ls-files", "--unmerged").stdout:
                self.tally.conflicts.append(f"{clone.name} ends with unmerged files")


@contextmanager
def world(root: Path, clones: int, seed: int = 0) -> Iterator[World]:
    """``clones`` clones of a new store under ``root``, with git's default settings, closed
    on the way out."""
    with isolated_git(root):
        w = World(root, clones, seed)
        try:
            yield w
        finally:
            w.close()


def _merges(path: Path) -> int:
    return len(git(path, "rev-list", "--merges", "HEAD").stdout.split())


def _views(store: Store) -> dict[str, dict[str, Any]]:
    """Every visible session's own messages: id -> (role, content)."""
    out: dict[str, dict[str, Any]] = {}
    for sid in store.session_ids():
        if sid in store:
            msgs = store.session(sid).messages()
            out[sid] = {m.id: (m.role, m.content) for m in msgs if m.session_id == sid}
    return out


def _tombstones(root: Path) -> tuple[set[str], dict[str, list[str]]]:
    """Every message a ``delete`` targets, and every ``drop`` record id per session, read
    straight from the files (they are kept for good: COMPACTION.md)."""
    deletes: set[str] = set()
    drops: dict[str, list[str]] = {}
    for folder in (root / "sessions").iterdir():
        for path in folder.iterdir():
            if layout.HOT_RE.fullmatch(path.name):
                scan = frames.scan(path.read_bytes())
                records = [
                    r for _, _, payload in scan.frames for r in frames.decode_records(payload)
                ]
            elif layout.SEALED_RE.fullmatch(path.name):
                records = read_sealed(path)
            else:
                continue
            for r in records:
                if r.get("kind") == "delete":
                    deletes.add(r["target"])
                elif r.get("kind") == "drop":
                    drops.setdefault(r["session"], []).append(r["id"])
    return deletes, drops


def run(clones: int, rounds: int, seed: int, operations: int = 6) -> Tally:
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="convstore-multiclone-") as tmp,
        world(Path(tmp), clones, seed) as w,
    ):
        for _ in range(rounds):
            w.round(operations)
        w.settle()
        w.verify()
    w.tally.seconds = time.perf_counter() - started
    return w.tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clones", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    if shutil.which("git") is None:
        print("git is not installed", file=sys.stderr)
        return 2
    failed = 0
    for i in range(args.runs):
        seed = args.seed + i if args.seed is not None else random.randrange(1 << 30)
        tally = run(args.clones, args.rounds, seed)
        print(tally, flush=True)
        failed += not tally.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
