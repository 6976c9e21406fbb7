"""Clones that work apart and merge with git never conflict and never lose a message.

Real git with its default merge settings (rename detection on), real clones of a bare
repository. The randomized form is benchmarks/multiclone.py; a failure prints its seed, and
``python -m benchmarks.multiclone --seed N`` replays it.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import multiclone
from convstore import Store, layout

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[multiclone.World]:
    with multiclone.world(tmp_path, clones=3) as w:
        yield w


def sync_all(w: multiclone.World, how: str, order: list[int]) -> None:
    for i in order:
        w.sync(w.clones[i], how)


class TestClonesThatCompactTheSameSessionApart:
    """Each clone deleting the sealed file they share and adding its own, similar one, is what
    git's rename detection pairs into rename/rename and rename/delete conflicts."""

    @pytest.mark.parametrize("how", ["git", "convstore"])
    @pytest.mark.parametrize("order", [[0, 1, 2, 0, 1], [2, 1, 0, 2, 1], [1, 0, 2, 1, 0]])
    def test_merge_with_no_conflict_and_nothing_lost(
        self, world: multiclone.World, how: str, order: list[int]
    ) -> None:
        w = world
        c0, c1, _ = w.clones
        s = c0.store.session("s0")
        # Enough varied text that two sealed files of the session share most of their bytes,
        # so that git's rename detection pairs the old file with each clone's new one.
        rng = random.Random(1)
        words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=7)) for _ in range(2000)]
        history = [
            {"role": "user", "content": " ".join(rng.choices(words, k=40))} for _ in range(300)
        ]
        for m in s.extend(history):
            c0.acked[m.id] = "s0"
        c0.store.compact("s0")
        sync_all(w, how, [0, 1, 2])
        # Apart: every clone appends to the session and compacts it; c2 also prunes.
        for n, clone in enumerate(w.clones):
            m = clone.store.session("s0").append("assistant", f"apart {clone.name}")
            clone.acked[m.id] = "s0"
            clone.store.compact("s0")
            if n == 2:
                clone.store.prune("1d")  # nothing that old: writes nothing, compacts nothing
                clone.store.compact()
        sync_all(w, how, order)
        w.settle()
        w.verify()
        assert w.tally.ok, str(w.tally)
        folder = c1.path / "sessions" / "s0"
        owners = {layout.SEALED_RE.fullmatch(p.name).group(1) for p in folder.glob("sealed.*")}  # type: ignore[union-attr]
        assert owners <= {c.store.writer_id for c in w.clones}


class TestRandomClones:
    @pytest.mark.parametrize("seed", [random.randrange(1 << 30) for _ in range(2)])
    def test_random_work_apart_merges_with_no_conflict_and_nothing_lost(self, seed: int) -> None:
        tally = multiclone.run(clones=3, rounds=6, seed=seed)
        assert tally.ok, f"replay with: python -m benchmarks.multiclone --seed {seed}\n{tally}"
        assert tally.merges > 0 and tally.compactions > 0


class TestFormatOneStores:
    def test_clones_of_a_format_one_store_migrate_apart_and_merge_cleanly(
        self, tmp_path: Path
    ) -> None:
        import tarfile

        fixture = Path(__file__).parent / "fixtures" / "v1-store.tar.gz"
        seed_dir = tmp_path / "seed"
        with tarfile.open(fixture) as tar:
            tar.extractall(seed_dir, filter="data")
        with multiclone.isolated_git(tmp_path):
            remote = tmp_path / "remote.git"
            multiclone.git(tmp_path, "init", "--quiet", "--bare", str(remote))
            multiclone.git(seed_dir, "init", "--quiet")
            multiclone.git(seed_dir, "add", "--all")
            multiclone.git(
                seed_dir, "-c", "user.name=v1", "-c", "user.email=v1@example.invalid",
                "commit", "--quiet", "-m", "a format 1 store",
            )  # fmt: skip
            multiclone.git(seed_dir, "push", "--quiet", str(remote), "HEAD:main")
            clones = []
            for name in ("a", "b"):
                multiclone.git(tmp_path, "clone", "--quiet", str(remote), name)
                multiclone.git(tmp_path / name, "config", "user.name", name)
                multiclone.git(tmp_path / name, "config", "user.email", f"{name}@example.invalid")
                store = Store(tmp_path / name)
                clones.append(multiclone.Clone(name, tmp_path / name, store))
            before = multiclone._views(clones[0].store)
            legacy = next((clones[0].path / "sessions" / "chat-a").glob("sealed.*"))
            assert layout.owner(legacy.name) is None  # format 1: nobody owns it
            w = multiclone.World.__new__(multiclone.World)
            w.root, w.clones = tmp_path, clones
            w.rng = random.Random(0)
            w.tally = multiclone.Tally(0, 2)
            for clone in clones:
                m = clone.store.session("chat-a").append("user", f"after the upgrade {clone.name}")
                clone.acked[m.id] = "chat-a"
                clone.store.compact()
            for clone in (*clones, *clones):
                w.sync(clone, "git")
            w.settle()  # `convstore sync` also makes what git checked out private
            w.verify()
            assert w.tally.ok, str(w.tally)
            for clone in clones:
                marker = (clone.path / "convstore.json").read_text()
                assert '"version": 2' in marker
                assert (clone.path / "sessions" / "chat-a" / legacy.name).exists()
                after = multiclone._views(clone.store)
                for sid, msgs in before.items():
                    assert msgs.items() <= after[sid].items(), sid
            for clone in clones:
                clone.store.close()


def test_the_multiclone_script_prints_its_seed_and_exits_zero_when_all_holds() -> None:
    from .conftest import run_python

    done = run_python(
        "import sys; from benchmarks.multiclone import main; "
        "sys.exit(main(['--clones', '2', '--rounds', '2', '--seed', '5']))",
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("seed 5: 2 clones, 2 rounds")
    assert " 0 conflicts, 0 lost" in done.stdout
