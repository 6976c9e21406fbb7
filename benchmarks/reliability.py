"""The reliability campaign: concurrent load, a SIGKILL loop and corruption, with real processes.

Long form (writes docs/reliability.md and benchmarks/results/<date>-reliability.json)::

    python -m benchmarks.reliability --minutes 10

The short forms run in CI from ``tests/test_reliability.py``, which calls the same campaign
functions with small sizes. Every campaign returns a :class:`Tally`; ``lost`` counts
acknowledged records that are gone and must stay 0, ``failures`` says what broke and how.

- **Concurrent load** (:func:`concurrent_load`): writer processes append and extend to shared
  and to their own sessions while reader processes check what they see (no duplicates, no
  record out of its writer's order, no half record), a compactor process compacts in a loop and
  a refresher process refreshes the catalog and searches. At the end every acknowledged message
  is there exactly once, in order, the catalog agrees, and ``check()`` is clean.
- **Kill loop** (:func:`kill_loop`): writers (which also edit and delete their own messages), a
  compactor and a refresher are SIGKILLed at random moments, round after round. After each round
  a fresh process-free read must find every acknowledged append, honour every acknowledged edit
  and delete, and hold no duplicate; ``check(repair=True)`` may only find what a crash leaves
  (torn tails, temporary files) and ``check()`` is clean after it.
- **Corruption** (:func:`corruption`): truncations, bit flips, garbage overwritten, inserted and
  appended, into hot segments, sealed Parquet files, the catalog, the search index and the
  format marker. Every damage to the files that are the truth must be reported by ``check()``;
  no record outside the damaged bytes may go missing; what is read must be what was written;
  a damaged derived cache must answer as before (rebuilt); nothing may raise anything but a
  ``ConvstoreError``, in the library or in the CLI (``convstore check``, ``convstore show``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convstore import ConvstoreError, Store
from convstore import frames as frames_mod
from convstore.layout import CACHE, HOT_RE, MARKER, SEALED_RE
from convstore.sealed import read_sealed

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
RESULTS = ROOT / "benchmarks" / "results"
Json = dict[str, Any]


@dataclasses.dataclass
class Tally:
    """What one campaign did and found."""

    campaign: str
    operations: int = 0  # acknowledged appends/edits/deletes, reads, compactions, refreshes
    acknowledged: int = 0  # messages whose append call returned
    kills: int = 0
    corruptions: int = 0
    detected: int = 0  # corruptions that check() reported, or that the cache survived
    lost: int = 0  # acknowledged (or untouched) records that went missing: must be 0
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < 200:
            self.failures.append(what)

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def to_dict(self) -> Json:
        return dataclasses.asdict(self)


# -- processes --------------------------------------------------------------------------------


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    """A fresh interpreter running ``code`` with convstore importable from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def module_missing(name: str) -> str | None:
    """Why ``name`` (built by another part of the project) cannot be used, or None."""
    try:
        importlib.import_module(name)
    except ImportError as e:
        return f"{name} is not importable ({e})"
    return None


def query_layer_missing() -> str | None:
    return module_missing("convstore.query")


def compaction_missing() -> str | None:
    return module_missing("convstore.compaction")


# A writer prints one line per call, after the call returned: that line is the acknowledgement.
#   A <sid>/<id> ...          messages appended (one line per append or extend)
#   E? <sid>/<id> <text>      an edit about to be made;   E <sid>/<id> <text>  it returned
#   D? <sid>/<id>             a delete about to be made;  D <sid>/<id>         it returned
WRITER = r"""
import random, sys
from convstore import Store
path, tag, sessions = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
count, seed = int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
mine = []
with Store(path) as st:
    hs = [st.session(s) for s in sessions]
    print("ready", flush=True)
    i = 0
    while count < 0 or i < count:
        h = hs[i % len(hs)]
        meta = {"w": tag, "i": i}
        pad = "x" * rng.choice((0, 10, 200, 3000))
        roll = rng.random()
        if roll < 0.2:
            ms = h.extend([{"role": "user", "content": f"{tag}:{i}:{j} {pad}", "metadata": meta}
                           for j in range(3)])
        elif roll < 0.25 and mine and count < 0:
            sid, mid = mine.pop(rng.randrange(len(mine)))
            text = f"{tag}:edited:{i}"
            print(f"E? {sid}/{mid} {text}", flush=True)
            st.session(sid).edit(mid, text)
            print(f"E {sid}/{mid} {text}", flush=True)
            mine.append((sid, mid))
            i += 1
            continue
        elif roll < 0.28 and mine and count < 0:
            sid, mid = mine.pop(rng.randrange(len(mine)))
            print(f"D? {sid}/{mid}", flush=True)
            st.session(sid).delete_message(mid)
            print(f"D {sid}/{mid}", flush=True)
            i += 1
            continue
        else:
            ms = [h.append("assistant", f"{tag}:{i}:0 {pad}", metadata=meta)]
        print("A " + " ".join(f"{m.session_id}/{m.id}" for m in ms), flush=True)
        mine.extend((m.session_id, m.id) for m in ms)
        i += 1
"""

# A reader checks every snapshot it reads: no duplicate id, each writer's messages in the order
# it wrote them, every text whole. One JSON line at the end: reads and violations.
READER = r"""
import json, os, sys
from convstore import Store
path, stop, sessions = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
reads, bad, seen = 0, [], {}
st = Store(path)
print("ready", flush=True)
while not os.path.exists(stop):
    if reads % 7 == 6:  # now and then a cold open, as a new process would
        st.close()
        st = Store(path)
    for sid in sessions:
        msgs = st.session(sid).messages()
        ids = [m.id for m in msgs]
        if len(ids) != len(set(ids)):
            bad.append(f"{sid}: duplicate ids in one read")
        # Nothing is deleted during the load: a read that holds fewer messages than an earlier
        # one saw a partial state (a file missed while compaction replaced it).
        if len(ids) < seen.get(sid, 0):
            bad.append(f"{sid}: read {len(ids)} messages after reading {seen[sid]}")
        seen[sid] = max(seen.get(sid, 0), len(ids))
        last = {}
        for m in msgs:
            w, i = m.metadata.get("w"), m.metadata.get("i")
            whole = isinstance(w, str) and isinstance(i, int) and m.text.startswith(f"{w}:{i}:")
            if not whole:
                bad.append(f"{sid}/{m.id}: not a whole record: {m.text[:40]!r} {m.metadata}")
                continue
            if i < last.get(w, -1):
                bad.append(f"{sid}: {w} #{i} after #{last[w]}")
            last[w] = i
        tail = st.session(sid).recent(20)
        keys = [(m.created_at, m.id) for m in tail]
        if keys != sorted(keys):
            bad.append(f"{sid}: recent(20) out of order")
        reads += 1
st.close()
print(json.dumps({"reads": reads, "violations": bad[:50]}), flush=True)
"""

COMPACTOR = r"""
import json, os, sys, time
from convstore import Store
path, stop = sys.argv[1], sys.argv[2]
runs, errors = 0, []
with Store(path) as st:
    print("ready", flush=True)
    while not os.path.exists(stop):
        try:
            st.compact()
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        runs += 1
        print("C", runs, flush=True)
        time.sleep(0.01)
print(json.dumps({"runs": runs, "errors": errors[:20]}), flush=True)
"""

REFRESHER = r"""
import json, os, sys, time
from convstore import Store
path, stop = sys.argv[1], sys.argv[2]
runs, errors = 0, []
with Store(path) as st:
    print("ready", flush=True)
    while not os.path.exists(stop):
        try:
            st.refresh()
            st.search("assistant OR user", limit=5)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        runs += 1
        print("R", runs, flush=True)
        time.sleep(0.01)
print(json.dumps({"runs": runs, "errors": errors[:20]}), flush=True)
"""


def last_json(out: str) -> Json:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)  # type: ignore[no-any-return]
    return {}


# -- what writers acknowledged ----------------------------------------------------------------


@dataclasses.dataclass
class Acks:
    """Everything the writers were told succeeded, and what they were still trying."""

    appended: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> session
    order: dict[str, list[str]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    edited: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> last acked text
    edit_tries: dict[str, set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))
    deleted: set[str] = dataclasses.field(default_factory=set)
    delete_tries: set[str] = dataclasses.field(default_factory=set)
    calls: int = 0

    def read(self, out: str, tag: str) -> None:
        # Only whole lines count: a line cut by the kill was never a complete acknowledgement.
        complete = out if out.endswith("\n") else out[: out.rfind("\n") + 1]
        for line in complete.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "A":
                self.calls += 1
                for token in rest.split():
                    sid, _, mid = token.partition("/")
                    self.appended[mid] = sid
                    self.order[f"{tag}@{sid}"].append(mid)
            elif kind in ("E?", "E"):
                ref, _, text = rest.partition(" ")
                mid = ref.partition("/")[2]
                self.edit_tries[mid].add(text)
                if kind == "E":
                    self.calls += 1
                    self.edited[mid] = text
            elif kind in ("D?", "D"):
                mid = rest.partition("/")[2]
                self.delete_tries.add(mid)
                if kind == "D":
                    self.calls += 1
                    self.deleted.add(mid)


def verify_acks(path: Path, acks: Acks, tally: Tally, when: str) -> None:
    """Read the store in this process (no writer alive) and hold it to every acknowledgement."""
    with Store(path) as st:
        present: dict[str, Any] = {}
        for sid in {*acks.appended.values()}:
            msgs = st.session(sid).messages()
            ids = [m.id for m in msgs]
            if len(ids) != len(set(ids)):
                tally.fail(f"{when}: session {sid} holds duplicate message ids")
            for m in msgs:
                present[m.id] = m
            position = {m.id: i for i, m in enumerate(msgs)}
            for key, mids in acks.order.items():
                if not key.endswith(f"@{sid}"):
                    continue
                seen = [position[m] for m in mids if m in position]
                if seen != sorted(seen):
                    tally.fail(f"{when}: {key} reads back out of the order it was written")
        for mid, sid in acks.appended.items():
            msg = present.get(mid)
            if mid in acks.deleted:
                if msg is not None:
                    tally.fail(f"{when}: {sid}/{mid} was deleted (acknowledged) but is back")
                continue
            if msg is None:
                if mid not in acks.delete_tries:
                    tally.lost += 1
                    tally.fail(f"{when}: acknowledged message {sid}/{mid} is missing")
                continue
            if mid in acks.edited:
                allowed = {acks.edited[mid]} | acks.edit_tries[mid]
                if msg.text not in allowed:
                    tally.fail(f"{when}: {sid}/{mid} reads {msg.text[:30]!r}, not its last edit")


def check_clean(path: Path, tally: Tally, when: str, *, repair: bool) -> None:
    """check(): with ``repair``, only crash debris may be found, and it must then be clean."""
    with Store(path) as st:
        if repair:
            report = st.check(repair=True)
            for issue in report.issues:
                # A cache build killed before it set its files' modes leaves DuckDB's and
                # tantivy's files as they made them (0644), inside folders that are 0700.
                unset_mode = "/.cache/" in issue.path and "mode 0" in issue.problem
                crash_debris = (
                    "torn tail" in issue.problem or "temporary file" in issue.problem or unset_mode
                )
                if not (issue.repaired and crash_debris):
                    tally.fail(f"{when}: check(repair=True) found {issue}")
                tally.count("repaired by check", int(issue.repaired))
        report = st.check()
        if not report.ok:
            tally.fail(f"{when}: check() is not clean: {report}")


# -- campaign 1: concurrent load --------------------------------------------------------------


def concurrent_load(
    root: Path,
    *,
    writers: int = 4,
    appends: int = 200,
    readers: int = 2,
    compactor: bool = True,
    refresher: bool = True,
    seed: int = 0,
) -> Tally:
    """``writers`` processes x ``appends`` calls on a shared session and their own, with
    readers, a compactor and a refresher running until the writers are done."""
    tally = Tally("concurrent load")
    path = root / "store"
    stop = root / "stop"
    stop.unlink(missing_ok=True)
    with Store(path) as st:
        for sid in ["shared-a", "shared-b", *[f"own-{w}" for w in range(writers)]]:
            st.create_session(sid)
    sessions = ["shared-a", "shared-b", *[f"own-{w}" for w in range(writers)]]
    others: list[tuple[str, subprocess.Popen[str]]] = []
    for r in range(readers):
        others.append((f"reader{r}", spawn(READER, str(path), str(stop), ",".join(sessions))))
    if compactor:
        others.append(("compactor", spawn(COMPACTOR, str(path), str(stop))))
    if refresher:
        reason = query_layer_missing()
        if reason:
            tally.notes.append(f"no refresher: {reason}")
        else:
            others.append(("refresher", spawn(REFRESHER, str(path), str(stop))))
    # The writers start once every reader, the compactor and the refresher run (importing the
    # query layer takes a while), so that all of them overlap the whole load.
    for _, p in others:
        assert p.stdout is not None
        p.stdout.readline()
    procs = [
        spawn(
            WRITER,
            str(path),
            f"w{w}",
            ",".join(["shared-a", f"own-{w}", "shared-b"]),
            str(appends),
            str(seed * 1000 + w),
        )
        for w in range(writers)
    ]
    acks = Acks()
    for w, p in enumerate(procs):
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            tally.fail(f"writer w{w} exited {p.returncode}: {err.strip()[-500:]}")
        acks.read(out, f"w{w}")
    stop.touch()
    for name, p in others:
        out, err = p.communicate(timeout=300)
        got = last_json(out)
        if p.returncode != 0 or not got:
            tally.fail(f"{name} exited {p.returncode}: {err.strip()[-500:]}")
            continue
        for v in got.get("violations", []) + got.get("errors", []):
            tally.fail(f"{name}: {v}")
        runs: int = got.get("reads") or got.get("runs") or 0
        tally.count(f"{name.rstrip('0123456789')} runs", runs)
    tally.acknowledged = len(acks.appended)
    tally.operations = acks.calls + sum(tally.counters.values())
    verify_acks(path, acks, tally, "after the load")
    with Store(path) as st:
        total = sum(len(st.session(s)) for s in sessions)
        if total != len(acks.appended):
            tally.fail(f"{total} messages in the store, {len(acks.appended)} acknowledged")
        if query_layer_missing() is None:
            st.refresh()
            n = scalar(st.sql("SELECT count(*) FROM messages"))
            if n != total:
                tally.fail(f"the catalog counts {n} messages after refresh, the files hold {total}")
    check_clean(path, tally, "after the load", repair=False)
    return tally


def scalar(result: Any) -> Any:
    """The first value of a query result, whatever its shape (rows, dicts, a cursor)."""
    if hasattr(result, "fetchall"):
        result = result.fetchall()
    if hasattr(result, "to_pylist"):
        result = result.to_pylist()
    rows = list(result)
    first = rows[0]
    if isinstance(first, dict):
        return next(iter(first.values()))
    if isinstance(first, (list, tuple)):
        return first[0]
    return first


# -- campaign 2: the kill loop ----------------------------------------------------------------


def kill_loop(
    root: Path,
    *,
    rounds: int = 10,
    writers: int = 2,
    seconds: float | None = None,
    seed: int = 0,
    check_every: int = 3,
) -> Tally:
    """Rounds of writers + a compactor (+ a refresher) killed with SIGKILL at random points.

    Stops after ``rounds`` rounds, or after ``seconds`` when given.
    """
    tally = Tally("kill loop")
    rng = random.Random(seed)
    path = root / "store"
    stop = root / "never"
    sessions = ["k-shared", *[f"k-own-{w}" for w in range(writers)]]
    with Store(path) as st:
        for sid in sessions:
            st.create_session(sid)
    acks = Acks()
    refresher = query_layer_missing() is None
    deadline = None if seconds is None else time.monotonic() + seconds
    r = 0
    while (deadline is None and r < rounds) or (
        deadline is not None and time.monotonic() < deadline
    ):
        procs: list[tuple[str, subprocess.Popen[str]]] = []
        for w in range(writers):
            mine = ",".join(["k-shared", f"k-own-{w}"])
            tag = f"r{r}w{w}"
            procs.append(
                (tag, spawn(WRITER, str(path), tag, mine, "-1", str(rng.randrange(1 << 30))))
            )
        procs.append(("compactor", spawn(COMPACTOR, str(path), str(stop))))
        if refresher and r % 2 == 0:
            procs.append(("refresher", spawn(REFRESHER, str(path), str(stop))))
        # Most rounds wait until every process has opened the store, then kill at a random
        # moment of its work; one round in five kills during start-up instead.
        early = rng.random() < 0.2
        if not early:
            for _, p in procs:
                assert p.stdout is not None
                p.stdout.readline()  # "ready" (or "" if it died: communicate() reports that)
        time.sleep(rng.uniform(0.0, 0.3) if early else rng.uniform(0.05, 0.8))
        rng.shuffle(procs)
        for _, p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            tally.kills += 1
            time.sleep(rng.uniform(0, 0.05))
        for tag, p in procs:
            out, err = p.communicate(timeout=60)
            if p.returncode != -signal.SIGKILL:
                tally.fail(
                    f"round {r}: {tag} ended with {p.returncode} before the kill: {err[-400:]}"
                )
            if "Traceback" in err and p.returncode != -signal.SIGKILL:
                tally.fail(f"round {r}: {tag}: {err.strip()[-400:]}")
            if tag == "compactor":
                tally.count("compactions completed", out.count("C "))
            elif tag == "refresher":
                tally.count("refreshes completed", out.count("R "))
            else:
                acks.read(out, tag)
        verify_acks(path, acks, tally, f"round {r}")
        if check_every and r % check_every == check_every - 1:
            check_clean(path, tally, f"round {r}", repair=True)
        r += 1
    check_clean(path, tally, "the end", repair=True)
    verify_acks(path, acks, tally, "after the final repair")
    if refresher:
        # Refreshers were killed mid-publish too: the catalog must still agree with the files.
        with Store(path) as st:
            st.refresh()
            total = sum(len(st.session(s)) for s in sessions)
            n = scalar(st.sql("SELECT count(*) FROM messages"))
            if n != total:
                tally.fail(f"after the kills the catalog counts {n} messages, the files {total}")
    tally.counters["rounds"] = r
    tally.acknowledged = len(acks.appended)
    tally.operations = (
        acks.calls
        + tally.counters.get("compactions completed", 0)
        + tally.counters.get("refreshes completed", 0)
    )
    tally.counters["acknowledged edits"] = len(acks.edited)
    tally.counters["acknowledged deletes"] = len(acks.deleted)
    return tally


# -- campaign 3: corruption -------------------------------------------------------------------


@dataclasses.dataclass
class Pristine:
    """A store built once, with what every file holds, to compare damaged copies against."""

    path: Path
    messages: dict[str, dict[str, str]]  # session -> message id -> text
    where: dict[str, list[tuple[str, int, int, list[str]]]]  # rel file -> [(start, end, ids)]
    search_hits: int
    catalog_count: int | None
    closed: set[str]  # hot segments that ended with an end marker (a successor follows)


def build_pristine(root: Path, *, sessions: int = 6, seed: int = 0) -> Pristine:
    """Sessions with hot segments of many frames, sealed files, and a built catalog and index."""
    rng = random.Random(seed)
    path = root / "pristine"
    # A small roll size gives closed segments (end marker, then a successor) beside open ones.
    with Store(path, roll_bytes=6_000) as st:
        for s in range(sessions):
            h = st.create_session(f"c{s}", title=f"session {s}", user_id=f"u{s % 2}")
            for i in range(12):
                if i % 4 == 0:
                    h.extend(
                        [
                            {"role": "user", "content": f"c{s} batch {i} {j} quokka"}
                            for j in range(3)
                        ]
                    )
                else:
                    h.append("assistant", f"c{s} message {i} " + "lorem " * rng.randrange(1, 300))
        with contextlib.suppress(ImportError):
            st.compact()
            for s in range(sessions):  # new hot segments after the sealed files
                h = st.session(f"c{s}")
                for i in range(10):
                    words = " ".join(f"w{rng.randrange(10**6)}" for _ in range(rng.randrange(300)))
                    h.append("user", f"c{s} after compaction {i} quokka {words}")
        msgs = {sid: {m.id: m.text for m in st.session(sid).messages()} for sid in st.session_ids()}
        hits = catalog = None
        if query_layer_missing() is None:
            st.refresh()
            hits = len(st.search("quokka", limit=1000))
            catalog = scalar(st.sql("SELECT count(*) FROM messages"))
    closed = {
        str(f.relative_to(path))
        for f in (path / "sessions").rglob("hot.*")
        if frames_mod.scan(f.read_bytes(), decompress=False).closed
    }
    found = hits if hits is not None else -1
    return Pristine(path, msgs, locate_records(path), found, catalog, closed)


def locate_records(path: Path) -> dict[str, list[tuple[str, int, int, list[str]]]]:
    """For every segment file: its frames (or the whole sealed file) and the message ids in them."""
    out: dict[str, list[tuple[str, int, int, list[str]]]] = {}
    for folder in sorted((path / "sessions").iterdir()):
        for f in sorted(folder.iterdir()):
            rel = str(f.relative_to(path))
            if HOT_RE.fullmatch(f.name):
                scan = frames_mod.scan(f.read_bytes())
                out[rel] = [
                    ("frame", start, end, message_ids(frames_mod.decode_records(payload)))
                    for start, end, payload in scan.frames
                ]
            elif SEALED_RE.fullmatch(f.name):
                out[rel] = [("file", 0, f.stat().st_size, message_ids(read_sealed(f)))]
    return out


def message_ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records if r.get("kind") == "message"]


KINDS = ("hot", "sealed", "catalog", "index", "marker")
DAMAGES = (
    "cut at a frame boundary",
    "truncate",
    "flip bits",
    "overwrite garbage",
    "insert garbage",
    "append garbage",
    "zero range",
)


def damage(path: Path, how: str, rng: random.Random) -> tuple[int, int]:
    """Damage ``path`` in place; return the byte range of the original file that was touched."""
    data = bytearray(path.read_bytes())
    n = len(data)
    if n == 0:
        path.write_bytes(b"garbage")
        return 0, 0
    at = rng.randrange(n)
    if how == "cut at a frame boundary" and HOT_RE.fullmatch(path.name):
        ends = [end for _, end, _ in frames_mod.scan(bytes(data)).frames if end < n]
        at = rng.choice(ends) if ends else 0
        path.write_bytes(bytes(data[:at]))
        return at, n
    if how in ("truncate", "cut at a frame boundary"):
        at = rng.randrange(1, n) if n > 1 else 0
        path.write_bytes(bytes(data[:at]))
        return at, n
    if how == "flip bits":
        flipped = [rng.randrange(n) for _ in range(rng.choice((1, 1, 2, 8)))]
        for i in flipped:
            data[i] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        return min(flipped), max(flipped) + 1
    size = rng.choice((1, 16, 100, 4096))
    junk = rng.randbytes(size)
    if how == "overwrite garbage":
        end = min(n, at + size)
        while junk[: end - at] == data[at:end]:  # a damage must change a byte (1 in 256 for 1)
            junk = rng.randbytes(size)
        data[at:end] = junk[: end - at]
        path.write_bytes(bytes(data))
        return at, end
    if how == "insert garbage":
        path.write_bytes(bytes(data[:at]) + junk + bytes(data[at:]))
        return at, at
    if how == "append garbage":
        path.write_bytes(bytes(data) + junk)
        return n, n
    if how == "zero range":
        if not any(data):
            raise ValueError(f"{path} holds only zero bytes: zeroing cannot damage it")
        end = min(n, at + size)
        while not any(data[at:end]):  # already zero there: zeroing would change nothing
            at = rng.randrange(n)
            end = min(n, at + size)
        data[at:end] = bytes(end - at)
        path.write_bytes(bytes(data))
        return at, end
    raise ValueError(how)


def cache_files(path: Path) -> dict[str, list[Path]]:
    """The derived cache's files, split into the catalog and the search index by folder name."""
    out: dict[str, list[Path]] = {"catalog": [], "index": []}
    cache = path / CACHE
    for f in sorted(cache.rglob("*")):
        rel = f.relative_to(cache).parts
        if not f.is_file() or rel[0] == "locks" or f.name == "writer_id" or f.stat().st_size == 0:
            continue
        kind = "index" if any("index" in part or "tantivy" in part for part in rel) else "catalog"
        out[kind].append(f)
    return out


def touched_ids(frames: list[tuple[str, int, int, list[str]]], lo: int, hi: int) -> set[str]:
    """Message ids whose frame (or file) overlaps the damaged bytes [lo, hi), or holds ``lo``
    when bytes were inserted there (lo == hi)."""
    out: set[str] = set()
    for kind, start, end, ids in frames:
        if kind == "file" or (start < hi and end > lo) or (lo == hi and start < lo < end):
            out.update(ids)
    return out


def truth_trial(
    trial: Path, p: Pristine, rel: str, how: str, lo: int, hi: int, tally: Tally, label: str
) -> None:
    """Damage in a hot segment or a sealed file: reported by check(), untouched records intact."""
    frames = p.where[rel]
    touched = touched_ids(frames, lo, hi)
    boundary = hi > lo and (lo == 0 or any(lo == end for _, _, end, _ in frames))
    with Store(trial) as st:
        report = st.check()
        named = [i for i in report.issues if Path(rel).name in i.path]
        if named:
            tally.detected += 1
        elif boundary and rel not in p.closed:
            # The open segment cut after a whole frame looks like a shorter segment: nothing in
            # the format says more was there. Counted and reported, not a failure.
            tally.count("open segment cut at a frame boundary (not detectable)")
            tally.notes.append(
                "the open hot segment cut exactly at a frame boundary reads as a shorter "
                "segment; check() cannot tell (the messages of the cut frames go unreported)"
            )
        elif boundary:
            tally.fail(
                f"{label}: check() did not report a closed segment cut at a frame boundary "
                f"(its end marker is gone; {len(touched)} messages lost silently)"
            )
        else:
            tally.fail(f"{label}: check() did not report the damage ({report})")
        read_back(st, p, touched, tally, label, "before repair")
        use_everything(st, p)
        st.check(repair=True)
        read_back(st, p, touched, tally, label, "after check(repair=True)")
        silent_loss(st, p, touched, tally, label, "check(repair=True)")
        for sid in p.messages:  # the next writer recovers
            st.session(sid).append("user", "written after the damage")
        read_back(st, p, touched, tally, label, "after new appends")
        if compaction_missing() is None:
            compacted = st.compact()
            tally.count("compactions that left a damaged session alone", len(compacted.problems))
            read_back(st, p, touched, tally, label, "after compaction")
            silent_loss(st, p, touched, tally, label, "compaction")
    with Store(trial) as st:
        read_back(st, p, touched, tally, label, "in a fresh Store")


def silent_loss(
    st: Store, p: Pristine, touched: set[str], tally: Tally, label: str, after: str
) -> None:
    """Damaged messages that are gone while check() says all is well: a loss made silent."""
    if not st.check().ok:
        return
    present = {m.id for sid in p.messages for m in st.session(sid).messages()}
    gone = touched - present
    if gone:
        tally.count(f"losses check() stopped reporting after {after}")
        tally.notes.append(
            f"{label}: after {after}, check() is clean but {len(gone)} damaged message(s) are"
            " gone without a trace"
        )


def use_everything(st: Store, p: Pristine) -> None:
    """Every read path on a damaged store: each may refuse (ConvstoreError), none may crash."""
    calls: list[Callable[[], object]] = [
        st.sessions,
        lambda: [st.session(sid).info() for sid in p.messages],
        lambda: [st.session(sid).recent(5) for sid in p.messages],
    ]
    if query_layer_missing() is None:
        calls += [lambda: st.search("quokka", limit=5), st.stats]
    for call in calls:
        with contextlib.suppress(ConvstoreError):
            call()


def read_back(
    st: Store, p: Pristine, touched: set[str], tally: Tally, label: str, when: str
) -> None:
    for sid, expected in p.messages.items():
        try:
            got = {m.id: m.text for m in st.session(sid).messages()}
        except ConvstoreError as e:
            # Refused loudly is not silent loss, but every untouched record is now unreachable.
            tally.count("sessions refused to read (ConvstoreError)")
            tally.notes.append(f"{label}, {when}: session {sid} refused: {e}")
            continue
        for mid, text in expected.items():
            if mid in touched:
                continue
            if mid not in got:
                tally.lost += 1
                tally.fail(f"{label}, {when}: untouched message {sid}/{mid} is gone")
            elif got[mid] != text:
                tally.fail(f"{label}, {when}: {sid}/{mid} reads {got[mid][:40]!r}, not its text")
        for mid, text in got.items():
            if mid in expected and text != expected[mid]:
                tally.fail(f"{label}, {when}: damaged message {sid}/{mid} served altered text")
            elif mid not in expected and text != "written after the damage":
                tally.fail(f"{label}, {when}: message {sid}/{mid} was never written")


def cache_trial(trial: Path, p: Pristine, tally: Tally, label: str) -> None:
    """Damage in the derived cache: answers must be what they were (the cache rebuilt)."""
    with Store(trial) as st:
        try:
            hits = len(st.search("quokka", limit=1000))
            count = scalar(st.sql("SELECT count(*) FROM messages"))
            st.stats()
        except ConvstoreError as e:
            tally.fail(f"{label}: refused instead of rebuilding the cache: {e}")
            return
        if hits != p.search_hits or count != p.catalog_count:
            tally.fail(
                f"{label}: answers changed: {hits} hits (was {p.search_hits}), "
                f"{count} messages in the catalog (was {p.catalog_count})"
            )
            return
        tally.detected += 1
        st.session("c0").append("user", "a quokka after the damage")
        st.refresh()
        if len(st.search("quokka", limit=1000)) != p.search_hits + 1:
            tally.fail(f"{label}: a message appended after the damage is not found by search")


def marker_trial(trial: Path, tally: Tally, label: str) -> None:
    try:
        st = Store(trial)
    except ConvstoreError:
        tally.detected += 1  # refused to open, with a message saying what to do
        return
    with st:
        report = st.check()
        if report.ok:
            tally.count("marker damage that left it valid")
        else:
            tally.detected += 1


def run_cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("convstore")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "convstore.cli"]
    env = {**os.environ, "CONVSTORE_DIR": str(path), "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def cli_trial(trial: Path, p: Pristine, tally: Tally, label: str) -> None:
    """``convstore check`` and ``convstore show`` on the damaged store: no traceback, ever, and
    ``check`` exits non-zero exactly when the library's check() finds a problem."""
    try:
        with Store(trial) as st:
            damaged = not st.check().ok
    except ConvstoreError:
        damaged = True
    for args in (["check"], ["show", next(iter(p.messages))]):
        out = run_cli(trial, *args)
        tally.count("CLI runs")
        # The CLI turns an unexpected exception into "internal error: ..." (no traceback
        # unless --debug): that is still a crash of the library underneath.
        crashed = "Traceback" in out.stderr + out.stdout or "internal error" in out.stderr
        if crashed:
            tally.fail(f"{label}: `convstore {' '.join(args)}` crashed:\n{out.stderr[-800:]}")
        elif args == ["check"] and damaged != (out.returncode != 0):
            tally.fail(
                f"{label}: `convstore check` exited {out.returncode} but check() found "
                + ("problems" if damaged else "none")
            )


def corruption(
    root: Path,
    *,
    trials: int = 20,
    seconds: float | None = None,
    seed: int = 0,
    cli_every: int = 4,
    kinds: Sequence[str] = KINDS,
    damages: Sequence[str] = DAMAGES,
) -> Tally:
    """Damage copies of one pristine store, each a different way; see the module docstring.

    Each trial takes the next kind of file in turn; the damage cycles through ``damages`` for
    the first trials (so that a short run covers every pair), then is drawn at random.
    """
    tally = Tally("corruption")
    rng = random.Random(seed)
    pristine = build_pristine(root, seed=seed)
    deadline = None if seconds is None else time.monotonic() + seconds
    t = 0
    while (deadline is None and t < trials) or (
        deadline is not None and time.monotonic() < deadline
    ):
        kind = kinds[t % len(kinds)]
        cycle = len(kinds) * len(damages)
        how = damages[(t // len(kinds)) % len(damages)] if t < cycle else rng.choice(damages)
        trial = root / f"trial{t}"
        shutil.copytree(pristine.path, trial)
        candidates = pick(trial, kind)
        t += 1
        if not candidates:
            tally.count(f"{kind}: nothing to damage")
            shutil.rmtree(trial)
            continue
        target = rng.choice(candidates)
        rel = str(target.relative_to(trial))
        lo, hi = damage(target, how, rng)
        tally.corruptions += 1
        tally.count(f"{kind}: {how}")
        label = f"trial {t - 1} ({how} in {rel}, bytes {lo}-{hi})"
        try:
            if kind in ("hot", "sealed"):
                truth_trial(trial, pristine, rel, how, lo, hi, tally, label)
            elif kind in ("catalog", "index"):
                cache_trial(trial, pristine, tally, label)
            else:
                marker_trial(trial, tally, label)
        except ConvstoreError as e:
            tally.count("refused with a ConvstoreError")
            tally.notes.append(f"{label}: {type(e).__name__}: {e}")
        except Exception as e:
            tally.fail(f"{label}: unhandled {type(e).__name__}: {e}\n{traceback.format_exc()}")
        if cli_every and (t - 1) % cli_every == 0:
            shutil.rmtree(trial)
            shutil.copytree(pristine.path, trial)
            target = trial / rel
            damage(target, how, random.Random(t))
            cli_trial(trial, pristine, tally, label)
        shutil.rmtree(trial, ignore_errors=True)
    tally.operations = tally.corruptions + tally.counters.get("CLI runs", 0)
    return tally


def pick(trial: Path, kind: str) -> list[Path]:
    if kind == "marker":
        return [trial / MARKER]
    if kind in ("catalog", "index"):
        return cache_files(trial)[kind]
    pattern = HOT_RE if kind == "hot" else SEALED_RE
    return [f for f in sorted((trial / "sessions").rglob("*")) if pattern.fullmatch(f.name)]


# -- the long form ----------------------------------------------------------------------------


def clones_in_git(seconds: float, seed: int) -> Tally:
    """benchmarks/multiclone.py, run after run with new seeds, until the time is up."""
    from benchmarks import multiclone

    tally = Tally("clones in git")
    started = time.monotonic()
    run = 0
    while time.monotonic() - started < seconds or run == 0:
        clones = 3 + run % 2
        one = multiclone.run(clones=clones, rounds=12, seed=seed * 1000 + run)
        log(f"clones in git, run {run + 1}: {str(one).splitlines()[0]}")
        tally.operations += one.operations
        tally.acknowledged += one.acknowledged
        tally.lost += len(one.lost)
        tally.count("runs")
        tally.count("clones", clones)
        tally.count("rounds", one.rounds)
        tally.count("syncs (convstore sync or plain git pull)", one.syncs)
        tally.count("merge commits", one.merges)
        tally.count("compactions", one.compactions)
        tally.count("conflicts", len(one.conflicts))
        tally.count("views that differ between clones", len(one.diverged))
        for problem in (*one.conflicts, *one.lost, *one.diverged, *one.check_problems):
            tally.fail(f"seed {one.seed}: {problem}")
        run += 1
    return tally


def campaign(minutes: float, root: Path, seed: int) -> list[Tally]:
    """Split the time: 15% concurrent load, 40% the kill loop, 20% clones merging in git, the
    rest corruption."""
    budget = minutes * 60
    tallies: list[Tally] = []
    started = time.monotonic()
    load = Tally("concurrent load")
    run = 0
    while time.monotonic() - started < budget * 0.15 or run == 0:
        log(f"concurrent load, run {run + 1}")
        folder = root / f"load{run}"
        folder.mkdir()
        one = concurrent_load(folder, writers=4, appends=300, readers=2, seed=seed + run)
        merge(load, one)
        shutil.rmtree(folder, ignore_errors=True)
        run += 1
    load.counters["runs"] = run
    tallies.append(load)
    log("kill loop")
    folder = root / "kill"
    folder.mkdir()
    tallies.append(kill_loop(folder, seconds=budget * 0.4, seed=seed, writers=3))
    log("clones in git")
    tallies.append(clones_in_git(budget * 0.2, seed))
    log("corruption")
    folder = root / "corrupt"
    folder.mkdir()
    remaining = max(30.0, budget - (time.monotonic() - started))
    tallies.append(corruption(folder, seconds=remaining, seed=seed))
    return tallies


def merge(into: Tally, one: Tally) -> None:
    into.operations += one.operations
    into.acknowledged += one.acknowledged
    into.kills += one.kills
    into.corruptions += one.corruptions
    into.detected += one.detected
    into.lost += one.lost
    for k, v in one.counters.items():
        into.count(k, v)
    into.failures += one.failures
    into.notes += one.notes


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def render(result: Json) -> str:
    tallies = result["campaigns"]
    total = {k: sum(t[k] for t in tallies) for k in ("operations", "kills", "corruptions", "lost")}
    git_runs = [t["counters"] for t in tallies if t["campaign"] == "clones in git"]
    merges = sum(c.get("merge commits", 0) for c in git_runs)
    conflicts = sum(c.get("conflicts", 0) for c in git_runs)
    lines = [
        "# Reliability",
        "",
        "What the reliability campaign (`benchmarks/reliability.py`) did to convstore on this"
        " machine, and what it found. Generated from"
        f" `benchmarks/results/{result['date'][:10]}-reliability.json`; do not edit by hand.",
        "",
        f"- **Date:** {result['date']}; {result['minutes']} minutes; seed {result['seed']}.",
        f"- **Reproduce:** `{result['command']}` from the repository root (`make reliability`);"
        " the short forms run in CI as `tests/test_reliability.py`.",
        f"- **Machine:** {result['machine']}.",
        f"- **convstore** {result['version']}; query layer: {result['query_layer']}.",
        "",
        "## Totals",
        "",
        "| operations | kills (SIGKILL) | corruptions tried | git merges | conflicts |"
        " records lost |",
        "|---|---|---|---|---|---|",
        f"| {total['operations']:,} | {total['kills']:,} | {total['corruptions']:,} |"
        f" {merges:,} | **{conflicts}** | **{total['lost']}** |",
        "",
        "Records lost counts acknowledged appends (and records outside the damaged bytes) that"
        " could not be read back. It must be 0.",
        "",
    ]
    for t in tallies:
        lines += [f"## {t['campaign'].capitalize()}", ""]
        lines += [
            f"- operations: {t['operations']:,}; acknowledged messages: {t['acknowledged']:,};"
            f" kills: {t['kills']:,}; corruptions: {t['corruptions']:,}; detected or survived:"
            f" {t['detected']:,}; lost: {t['lost']}",
        ]
        tried = {k: v for k, v in t["counters"].items() if k.split(": ")[0] in KINDS}
        lines += [f"- {k}: {v:,}" for k, v in sorted(t["counters"].items()) if k not in tried]
        if tried:
            lines += ["", *damage_table(tried), ""]
        if t["failures"]:
            lines += ["", f"**{len(t['failures'])} failure(s):**", ""]
            lines += [f"- {x.splitlines()[0]}" for x in t["failures"][:30]]
        else:
            lines += ["- failures: none"]
        if t["notes"]:
            lines += ["", "Notes:", ""]
            notes = sorted(set(n.split(": ", 1)[-1] for n in t["notes"]))
            lines += [f"- {n}" for n in notes[:15]]
        lines.append("")
    lines += METHOD.splitlines()
    return "\n".join(lines) + "\n"


def damage_table(tried: dict[str, int]) -> list[str]:
    """Corruptions tried, as a table of file kind by kind of damage."""
    kinds = [k for k in KINDS if any(key.startswith(f"{k}: ") for key in tried)]
    head = "| damage | " + " | ".join(kinds) + " |"
    rows = [head, "|---|" + "---|" * len(kinds)]
    for how in DAMAGES:
        cells = [str(tried.get(f"{k}: {how}", 0)) for k in kinds]
        rows.append(f"| {how} | " + " | ".join(cells) + " |")
    return rows


METHOD = """## What each campaign does

- **Concurrent load.** 4 writer processes x 300 calls (appends, and `extend` of 3) spread over
  two shared sessions and one session of their own, while 2 reader processes check every
  snapshot (no duplicate id, each writer's messages in its order, every text whole, `recent(20)`
  sorted), a compactor process runs `compact()` in a loop and a refresher process refreshes the
  catalog and searches. Then every acknowledged message must be there exactly once and in order,
  the catalog's count must equal the files', and `check()` must be clean.
- **Kill loop.** Each round starts 3 writers (appends, extends, edits and deletes of their own
  messages), a compactor and (every other round) a refresher, and kills them all with SIGKILL
  at a random moment (0.3-1.2 s, during start-up or work), one by one in random order. A line
  printed after a call returned is its acknowledgement. After every round a read with no process
  alive must find every acknowledged append, no acknowledged delete, each acknowledged edit's
  text (or a later, unacknowledged one), and no duplicate. Every third round `check(repair=True)`
  may only find crash debris (torn tails, temporary files, and the modes of cache files that a
  killed cache build had not yet set to 0600, in folders that are 0700), and `check()` must
  then be clean.
- **Corruption.** One store with hot segments of many frames, sealed Parquet files, a catalog
  and a search index is copied, and each copy damaged once: truncated, bits flipped, garbage
  written over, inserted or appended, bytes zeroed; in a hot segment, a sealed file, a catalog
  file, a search-index file or the format marker. Damage to segments must be reported by
  `check()`, every message outside the damaged bytes must read back with its text (before and
  after `check(repair=True)`, after new appends, and in a fresh `Store`), and no message may
  read back altered. Damage to the cache must leave search, SQL and stats answering as before.
  Anything but a `ConvstoreError` is a failure; every fourth copy is also given to the CLI
  (`convstore check`, `convstore show`), whose stderr must hold no traceback.
- **Clones in git.** `benchmarks/multiclone.py`, run after run with a new seed: 3 or 4 clones of
  one store (real `git clone` of a bare repository) each do random work apart (append, extend,
  create, edit, delete a message, branch, delete a session, compact a session or all, prune),
  then sync one after another in a random order, each by `convstore sync` or by plain
  `git pull --no-rebase` with git's default settings (rename detection on). Any conflict is a
  failure. After the last round every clone syncs until all agree; then every clone must show
  the same sessions and messages (and SQL the same rows), every acknowledged message must be
  visible unless a `delete` targets it or a `drop` of its session was written after it, and
  `check()` must be clean in every clone.
"""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", help="where to work (default: a new temporary folder)")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/reliability.md")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="convstore-reliability-", dir=args.dir))
    started = time.time()
    try:
        tallies = campaign(args.minutes, root, args.seed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    import platform

    import convstore

    result: Json = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": args.minutes,
        "elapsed_s": round(time.time() - started, 1),
        "seed": args.seed,
        "command": f"python -m benchmarks.reliability --minutes {args.minutes:g}",
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {sys.version.split()[0]}",
        "version": convstore.__version__,
        "query_layer": query_layer_missing() or "present",
        "campaigns": [t.to_dict() for t in tallies],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{result['date'][:10]}-reliability.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out}")
    if not args.no_doc:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(render(result))
        log(f"wrote {DOC}")
    failed = sum(len(t.failures) for t in tallies)
    lost = sum(t.lost for t in tallies)
    print(f"{failed} failure(s), {lost} record(s) lost")
    for t in tallies:
        for x in t.failures[:10]:
            print(f"  {t.campaign}: {x}")
    return 1 if failed or lost else 0


if __name__ == "__main__":
    sys.exit(main())
