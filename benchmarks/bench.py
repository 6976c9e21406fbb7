"""convstore beside its peers, on one deterministic chat workload, in one run.

Reproduce from the repository root (``make bench`` and ``make bench-full`` do the same)::

    python -m benchmarks.bench --quick     # 10k messages, about a minute
    python -m benchmarks.bench --full      # 10k, 100k and 1M messages, up to 15 minutes

Method (docs/benchmarks.md repeats it beside the figures):

- every system (convstore and each peer of ``benchmarks.peers``) is loaded with the same
  ``benchmarks.workload`` messages and driven through the same ``Peer`` calls;
- each timed call is measured alone with ``time.perf_counter_ns``, after a warm-up; a metric is
  measured in several repeats and the *median of the repeats* is reported (never a mean), with
  p50/p90/p99 where a distribution matters;
- ratios are convstore's figure divided by the peer's, both from this run;
- a peer whose load would take longer than the mode's budget at a scale is skipped, with the
  estimate (from its own measured load rate) as the reason;
- peak memory is the peak resident set (``VmHWM``) of a fresh process that imports only the
  system under test, opens the loaded store and reads from it, so the harness's own memory
  (the workload) does not count.

Results go to ``benchmarks/results/<date>-<mode>.json``; ``--full`` (or ``--doc``) also renders
``docs/benchmarks.md``; ``--render FILE`` renders the page again from a results file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.peers import (
    PEERS,
    Hit,
    LanggraphSqliteSaver,
    Peer,
    PeerUnavailable,
    SqliteChat,
    SqliteFts5,
    SqliteWal,
    Turn,
)
from benchmarks.workload import COMMON_WORD, RARE_WORD, WorkMessage, date_window, messages
from convstore import Session, SessionNotFound, Store

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
Json = dict[str, Any]

# -- modes ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mode:
    """How much to measure: scales, repeats and the time a peer may spend loading one scale."""

    name: str
    scales: tuple[int, ...]
    repeats: int  # repeats of each timed series; the median is reported
    singles: int  # single appends per repeat
    batches: int  # extend(100) calls per repeat
    recent_sessions: int  # sessions sampled for recent(20)
    search_reps: int  # calls per search query (fewer when a call is slow)
    load_budget_s: float  # a peer estimated to need longer to load a scale is skipped
    open_sessions: int  # sessions in the store-open benchmark
    long_sessions: tuple[int, ...]  # lengths of the one-session stores for recent(20) scaling
    checkpoint_steps: int  # LangGraph steps for the bytes-per-step comparison


QUICK = Mode(
    name="quick",
    scales=(10_000,),
    repeats=3,
    singles=100,
    batches=5,
    recent_sessions=100,
    search_reps=50,
    load_budget_s=6.0,
    # Making 10,000 session folders costs two directory fsyncs each: too long for a quick run.
    open_sessions=2_000,
    long_sessions=(1_000, 20_000),
    checkpoint_steps=400,
)
FULL = Mode(
    name="full",
    scales=(10_000, 100_000, 1_000_000),
    repeats=5,
    singles=300,
    batches=10,
    recent_sessions=200,
    # p99 needs 100 samples or more to be anything but the slowest call: 200 (within the
    # 4-second budget per query, which the slow peers reach first).
    search_reps=200,
    load_budget_s=75.0,
    open_sessions=10_000,
    long_sessions=(1_000, 100_000),
    checkpoint_steps=1000,
)

# Peers that cannot search are still measured on every other metric.
SEARCH_QUERIES: tuple[tuple[str, str, bool], ...] = (
    ("rare", RARE_WORD, False),
    ("rare + date", RARE_WORD, True),
    ("common", COMMON_WORD, False),
    ("common + date", COMMON_WORD, True),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- statistics -------------------------------------------------------------------------------


def pct(sorted_ns: Sequence[int], q: float) -> float:
    """The q-quantile (nearest rank) of sorted nanosecond samples, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    i = min(len(sorted_ns) - 1, max(0, round(q * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[i] / 1e6


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def latency(series: Sequence[Sequence[int]]) -> Json:
    """Percentiles of each repeat's samples, and the median of each percentile over repeats."""
    per = []
    for ns in series:
        s = sorted(ns)
        per.append(
            {
                "n": len(s),
                "p50": pct(s, 0.5),
                "p90": pct(s, 0.9),
                "p99": pct(s, 0.99),
                "max": s[-1] / 1e6,
            }
            if s
            else {"n": 0}
        )
    per = [p for p in per if p["n"]]
    out: Json = {"repeats": len(per), "calls": sum(p["n"] for p in per)}
    for key in ("p50", "p90", "p99", "max"):
        out[f"{key}_ms"] = median([p[key] for p in per])
    return out


def rate(series: Sequence[Sequence[int]], per_call: int = 1) -> Json:
    """Items per second of each repeat (items / summed call time), and their median."""
    rates = [len(ns) * per_call / (sum(ns) / 1e9) for ns in series if ns and sum(ns)]
    return {"per_s": median(rates), "repeats_per_s": [round(r, 1) for r in rates]}


def timed(fn: Callable[[], Any]) -> tuple[int, Any]:
    t0 = time.perf_counter_ns()
    out = fn()
    return time.perf_counter_ns() - t0, out


# -- convstore behind the peers' interface ----------------------------------------------------


class Convstore(Peer):
    """convstore driven through the same calls as the peers: one session per workload session,
    ``append`` for one message, ``extend`` per session for a batch, ``recent(n)``, and the query
    layer's ``search`` (BM25, best first) when it is installed."""

    can_search = True

    def __init__(self, directory: Path | None = None, *, sync: str = "always") -> None:
        self.sync = sync
        self.name = "convstore" if sync == "always" else f"convstore ({sync})"
        super().__init__(directory)

    def _open(self) -> None:
        self.store = Store(self.dir / "store", sync=self.sync)  # type: ignore[arg-type]
        self.handles: dict[str, Session] = {}

    def handle(self, session_id: str) -> Session:
        # An app keeps the handle of the conversation it is in; so does the harness.
        h = self.handles.get(session_id)
        if h is None:
            try:
                h = self.store.session(session_id)
            except SessionNotFound:
                h = self.store.create_session(session_id)
            self.handles[session_id] = h
        return h

    def append(self, msg: WorkMessage) -> None:
        self.handle(msg.session_id).append(
            msg.role, msg.content, metadata=msg.metadata, created_at=msg.created_at
        )

    def append_batch(self, msgs: Sequence[WorkMessage]) -> None:
        by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in msgs:
            by_session[m.session_id].append(
                {
                    "role": m.role,
                    "content": m.content,
                    "metadata": m.metadata,
                    "created_at": m.created_at,
                }
            )
        for sid, items in by_session.items():
            self.handle(sid).extend(items)

    def recent(self, session_id: str, n: int = 20) -> list[Turn]:
        return [Turn(m.role, m.text) for m in self.handle(session_id).recent(n)]

    def search(
        self,
        word: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 20,
    ) -> list[Hit]:
        hits = self.store.search(word, since=since, until=until, limit=limit)
        return as_hits(hits)

    def segment_bytes(self) -> int:
        """Bytes of the files that are the truth (everything but the local cache)."""
        root = self.store.path
        return sum(
            p.stat().st_size
            for p in root.rglob("*")
            if p.is_file() and layout_cache() not in p.relative_to(root).parts
        )

    def cache_bytes(self) -> int:
        """Bytes of the derived catalog and search index (locks and writer id left out)."""
        cache = self.store.path / layout_cache()
        return sum(
            p.stat().st_size
            for p in cache.rglob("*")
            if p.is_file() and "locks" not in p.relative_to(cache).parts and p.name != "writer_id"
        )

    def bytes_on_disk(self) -> int:
        return self.segment_bytes()

    def close(self) -> None:
        # Store.close() returns while an automatic background compaction may still run; the
        # harness deletes the folder next, so it waits for it first.
        if compaction_reason() is None:
            importlib.import_module("convstore.compaction").wait_for_background(self.store, 600)
        self.store.close()


def as_hits(hits: Any) -> list[Hit]:
    """convstore's search hits in the peers' ``Hit`` shape."""
    return [Hit(h.session_id, str(h.created_at), h.text) for h in hits]


def layout_cache() -> str:
    from convstore import layout

    return layout.CACHE


def module_missing(name: str) -> str | None:
    """Why ``name`` cannot be used (it is being built by another part of the project), or None."""
    try:
        found = importlib.util.find_spec(name) is not None
    except ImportError as e:
        return f"{name} is not importable ({e})"
    return None if found else f"{name} is not importable (no such module)"


def query_layer_reason() -> str | None:
    """Why the query layer cannot be measured, or None when it can."""
    return module_missing("convstore.query")


def compaction_reason() -> str | None:
    return module_missing("convstore.compaction")


# -- systems ----------------------------------------------------------------------------------


def systems() -> list[tuple[str, Callable[[], Peer]]]:
    """Every system in report order: convstore first, then the peers as peers.py lists them."""
    out: list[tuple[str, Callable[[], Peer]]] = [("convstore", Convstore)]
    for cls in PEERS:
        out.append((cls.name, cls))
    return out


def durability(name: str) -> str:
    return {
        "convstore": "fdatasync per append",
        "convstore (interval)": "fsync every 1 s (relaxed)",
        "sqlite-chat": "fsync per commit (journal + db)",
        "sqlite-wal": "no fsync per commit (WAL, synchronous=NORMAL)",
        "sqlite-fts5": "fsync per commit (journal + db)",
        "agents-sqlitesession": "fsync per commit (WAL, synchronous=FULL)",
        "langchain-filehistory": "no fsync (rewrites the file)",
        "langgraph-sqlitesaver": "fsync per commit, 2 commits (WAL, synchronous=FULL)",
        "jsonl-fsync": "fsync per append",
    }.get(name, "")


RELAXED = frozenset({"convstore (interval)", "sqlite-wal", "langchain-filehistory"})


# -- loading ----------------------------------------------------------------------------------


def chunks(msgs: Sequence[WorkMessage], size: int) -> Iterator[Sequence[WorkMessage]]:
    for i in range(0, len(msgs), size):
        yield msgs[i : i + size]


def load(peer: Peer, msgs: Sequence[WorkMessage], budget_s: float) -> Json:
    """Load ``msgs`` with the batch call, in global time order, a chunk at a time.

    The first chunk is a probe: if the measured rate says the whole load would exceed the budget,
    the rest is not loaded and the reason is returned as ``skipped``.
    """
    n = len(msgs)
    chunk = max(1_000, n // 10)
    probe = min(n, 1_000)
    t0 = time.perf_counter()
    peer.append_batch(msgs[:probe])
    first = time.perf_counter() - t0
    estimate = first / probe * n
    if estimate > budget_s and probe < n:
        return {
            "skipped": f"estimated {fmt_duration(estimate)} to load {n:,} messages "
            f"({probe / first:,.0f} msg/s measured on the first {probe:,}), over this mode's "
            f"budget of {fmt_duration(budget_s)} per peer and scale",
            "probe_per_s": probe / first,
        }
    for part in chunks(msgs[probe:], chunk):
        peer.append_batch(part)
    elapsed = time.perf_counter() - t0
    return {"messages": n, "seconds": elapsed, "per_s": n / elapsed}


def fmt_duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def extra_messages(
    count: int, session_ids: Sequence[str], seed: int, group: int
) -> list[WorkMessage]:
    """New messages for sessions that already exist: ``group`` consecutive ones per session.

    They come from the workload with another seed, so their text has the same shape and the
    same vocabulary, but nothing identical to what was loaded.
    """
    fresh = list(messages(count, seed=seed, sessions=max(1, count // 50)))
    out = []
    for i, m in enumerate(fresh):
        sid = session_ids[(i // group) % len(session_ids)]
        out.append(dataclasses.replace(m, session_id=sid))
    return out


# -- measuring one system ---------------------------------------------------------------------


def measure_appends(peer: Peer, extra: Sequence[WorkMessage], mode: Mode) -> Json:
    """Single appends, each timed alone: ``mode.repeats`` series of ``mode.singles`` calls."""
    warm_sessions(peer, extra)
    warm = 20
    for m in extra[:warm]:
        peer.append(m)
    series: list[list[int]] = []
    pos = warm
    for _ in range(mode.repeats):
        gc.collect()
        ns = []
        for m in extra[pos : pos + mode.singles]:
            t0 = time.perf_counter_ns()
            peer.append(m)
            ns.append(time.perf_counter_ns() - t0)
        pos += mode.singles
        series.append(ns)
    return {**rate(series), **latency(series), "appended": pos}


def measure_batches(peer: Peer, extra: Sequence[WorkMessage], mode: Mode) -> Json:
    """``append_batch`` of 100 messages of one session (convstore: one ``extend``)."""
    warm_sessions(peer, extra)
    batches = list(chunks(extra, 100))
    peer.append_batch(batches[0])  # warm-up
    series: list[list[int]] = []
    pos = 1
    for _ in range(mode.repeats):
        gc.collect()
        ns = []
        for b in batches[pos : pos + mode.batches]:
            t0 = time.perf_counter_ns()
            peer.append_batch(b)
            ns.append(time.perf_counter_ns() - t0)
        pos += mode.batches
        series.append(ns)
    return {**rate(series, per_call=100), **latency(series), "appended": pos * 100}


def warm_sessions(peer: Peer, msgs: Sequence[WorkMessage]) -> None:
    """Read each session the timed calls will write to, once: an app appends to a conversation
    it has open, so the first read of a session (convstore builds its view then) is not part
    of an append's cost."""
    for sid in dict.fromkeys(m.session_id for m in msgs):
        peer.recent(sid, 1)


def measure_recent(peer: Peer, session_ids: Sequence[str], mode: Mode) -> Json:
    """recent(20) on sampled sessions, warm (each session read once before timing)."""
    for sid in session_ids:
        peer.recent(sid, 20)
    series: list[list[int]] = []
    for _ in range(mode.repeats):
        gc.collect()
        ns = []
        for sid in session_ids:
            t0 = time.perf_counter_ns()
            peer.recent(sid, 20)
            ns.append(time.perf_counter_ns() - t0)
        series.append(ns)
    return latency(series)


def measure_search(peer: Peer, mode: Mode) -> Json:
    """Each query repeated; a slow query gets fewer calls (at least 3) within ~4 s."""
    since, until = date_window()
    out: Json = {}
    for label, word, dated in SEARCH_QUERIES:
        lo, hi = (since, until) if dated else (None, None)

        def call(w: str = word, a: datetime | None = lo, b: datetime | None = hi) -> None:
            peer.search(w, a, b, limit=20)

        call()  # warm-up
        ns: list[int] = []
        spent = 0
        while len(ns) < mode.search_reps and (len(ns) < 3 or spent < 4e9):
            t, _ = timed(call)
            ns.append(t)
            spent += t
        s = sorted(ns)
        out[label] = {"calls": len(s), "p50_ms": pct(s, 0.5), "p99_ms": pct(s, 0.99)}
    rare = peer.search(RARE_WORD, limit=1000)
    out["rare_hits"] = len(rare)
    return out


def measure_stats_sqlite(peer: SqliteChat, mode: Mode) -> Json:
    """What store.stats() answers, as SQL over a chat app's SQLite file: sessions, messages by
    role, session-length distribution, messages per day and per hour, tokens per model."""
    conn = peer.conn
    queries = (
        "SELECT count(*) FROM sessions",
        "SELECT role, count(*) FROM messages GROUP BY role",
        "SELECT n FROM (SELECT session_id, count(*) AS n FROM messages GROUP BY session_id) "
        "ORDER BY n",
        "SELECT substr(created_at, 1, 10) AS d, count(*) FROM messages GROUP BY d",
        "SELECT substr(created_at, 12, 2) AS h, count(*) FROM messages GROUP BY h",
        "SELECT json_extract(metadata, '$.model') AS m, "
        "sum(json_extract(metadata, '$.tokens.input')), "
        "sum(json_extract(metadata, '$.tokens.output')) FROM messages "
        "WHERE role = 'assistant' GROUP BY m",
    )

    def run() -> None:
        for q in queries:
            conn.execute(q).fetchall()

    run()
    ns: list[int] = []
    spent = 0
    while len(ns) < mode.repeats or (spent < 2e9 and len(ns) < 10):
        t, _ = timed(run)
        ns.append(t)
        spent += t
        if spent > 20e9:
            break
    s = sorted(ns)
    return {"calls": len(s), "p50_ms": pct(s, 0.5), "p99_ms": pct(s, 0.99)}


def measure_stats_convstore(peer: Convstore, mode: Mode) -> Json:
    peer.store.stats()  # warm
    ns = []
    for _ in range(max(mode.repeats, 5)):
        t, _ = timed(peer.store.stats)
        ns.append(t)
    s = sorted(ns)
    return {"calls": len(s), "p50_ms": pct(s, 0.5), "p99_ms": pct(s, 0.99)}


def measure_refresh(peer: Convstore, session_ids: Sequence[str], mode: Mode) -> Json:
    """Refresh after one appended message (and check that search then finds it), and a refresh
    with nothing new."""
    store = peer.store
    store.refresh()
    idle = []
    for _ in range(max(mode.repeats, 5)):
        t, _ = timed(store.refresh)
        idle.append(t)
    after_one = []
    found = 0
    tries = max(mode.repeats * 2, 10)
    for i in range(tries):
        token = f"refreshprobe{i}x{random.Random(i).randrange(10**9)}"
        peer.handle(session_ids[i % len(session_ids)]).append("user", f"a probe {token} here")
        t, _ = timed(store.refresh)
        after_one.append(t)
        if len(store.search(token, limit=5)) >= 1:
            found += 1
    a, b = sorted(idle), sorted(after_one)
    return {
        "nothing_new_p50_ms": pct(a, 0.5),
        "after_one_append_p50_ms": pct(b, 0.5),
        "after_one_append_p99_ms": pct(b, 0.99),
        "probes": tries,
        "probes_found_by_search": found,
    }


APPENDER = r"""
import json, os, sys, time
from convstore import Store
path, stop, sessions = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
lat, ids = [], []
with Store(path) as st:
    hs = [st.session(s) for s in sessions]
    print("ready", flush=True)
    i = 0
    while not os.path.exists(stop):
        t0 = time.perf_counter_ns()
        m = hs[i % len(hs)].append("user", f"during compaction {i}")
        lat.append(time.perf_counter_ns() - t0)
        ids.append((m.session_id, m.id))
        i += 1
        time.sleep(0.002)
print(json.dumps({"lat": lat, "ids": ids}), flush=True)
"""


def measure_compaction(peer: Convstore, session_ids: Sequence[str], messages_total: int) -> Json:
    """Compact the whole store while another process appends durably to some of its sessions:
    compaction time, bytes per message after it, the appender's worst stall, and whether every
    append made during compaction is still there."""
    store = peer.store
    stop = peer.dir / "stop-appender"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(store.path), str(stop), ",".join(session_ids[:8])],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    child.stdout.readline()
    time.sleep(0.2)
    t0 = time.perf_counter()
    store.compact()
    seconds = time.perf_counter() - t0
    time.sleep(0.2)
    stop.touch()
    out, _ = child.communicate(timeout=120)
    got = json.loads(out.strip().splitlines()[-1])
    lat = sorted(got["lat"])
    missing = 0
    by_sid: dict[str, set[str]] = defaultdict(set)
    for sid, mid in got["ids"]:
        by_sid[sid].add(mid)
    for sid, mids in by_sid.items():
        present = {m.id for m in store.session(sid).messages()}
        missing += len(mids - present)
    total = messages_total + len(got["ids"])
    after = peer.segment_bytes()
    return {
        "seconds": seconds,
        "messages": total,
        "bytes": after,
        "bytes_per_message": after / total,
        "appends_during": len(lat),
        "append_p50_ms": pct(lat, 0.5),
        "append_p99_ms": pct(lat, 0.99),
        "append_max_ms": lat[-1] / 1e6 if lat else float("nan"),
        "appends_lost": missing,
    }


def measure_system(
    name: str,
    make: Callable[[], Peer],
    msgs: Sequence[WorkMessage],
    sample: Sequence[str],
    extra_single: Sequence[WorkMessage],
    extra_batch: Sequence[WorkMessage],
    mode: Mode,
    root: Path,
) -> Json:
    """Everything for one system at one scale; its folder is removed at the end."""
    folder = root / name.replace(" ", "_")
    peer = make()
    res: Json = {}
    if isinstance(peer, Convstore):
        # A bulk import into convstore is Store(sync="close"): one fsync per file at close
        # instead of one per session per chunk (a peer's batch commit fsyncs once per chunk).
        log(f"  {name}: loading {len(msgs):,} (sync='close', then close)")
        loader = Convstore(folder, sync="close")
        t0 = time.perf_counter()
        res["load"] = load(loader, msgs, float("inf"))
        loader.close()
        res["load"]["per_s"] = len(msgs) / (time.perf_counter() - t0)
    try:
        peer.setup(folder)
    except PeerUnavailable as e:
        return {"skipped": e.reason}
    res["durability"] = durability(peer.name)
    closed = False
    try:
        if not isinstance(peer, Convstore):
            log(f"  {name}: loading {len(msgs):,}")
            # SQLite + FTS5 is what issue 3's search targets are compared with: it gets more
            # time, so that it is measured at every scale.
            budget = mode.load_budget_s * (4 if isinstance(peer, SqliteFts5) else 1)
            res["load"] = load(peer, msgs, budget)
        if "skipped" in res["load"]:
            res["skipped"] = res["load"]["skipped"]
            return res
        total = len(msgs)
        if isinstance(peer, Convstore):
            res["bytes_hot"] = peer.segment_bytes()
            res["bytes_per_message_hot"] = res["bytes_hot"] / total
        log(f"  {name}: single appends")
        res["append"] = measure_appends(peer, extra_single, mode)
        total += res["append"]["appended"]
        if isinstance(peer, Convstore):
            relaxed = Convstore(folder, sync="interval")
            try:
                res["append_relaxed"] = measure_appends(relaxed, extra_single, mode)
                total += res["append_relaxed"]["appended"]
                # extend(100) without an fsync per call, as the SQLite WAL peer commits: the
                # same batches again (new ids), so both durabilities see the same bytes.
                log(f"  {name}: batches (sync='interval')")
                res["batch_relaxed"] = measure_batches(relaxed, extra_batch, mode)
                total += res["batch_relaxed"]["appended"]
            finally:
                relaxed.close()
        log(f"  {name}: batches")
        res["batch"] = measure_batches(peer, extra_batch, mode)
        total += res["batch"]["appended"]
        log(f"  {name}: recent")
        res["recent"] = measure_recent(peer, sample, mode)
        if isinstance(peer, Convstore):
            measure_convstore_queries(peer, res, sample, mode, total)
            total = res.get("compaction", {}).get("messages", total)
        elif peer.can_search and type(peer) is not SqliteWal:  # same LIKE scan as sqlite-chat
            log(f"  {name}: search")
            res["search"] = measure_search(peer, mode)
            if isinstance(peer, SqliteFts5):
                latest = SqliteFts5(folder, latest=True)
                try:
                    res["search_newest"] = measure_search(latest, mode)
                finally:
                    latest.close()
            if type(peer) is SqliteChat:
                res["stats"] = measure_stats_sqlite(peer, mode)
        if isinstance(peer, LanggraphSqliteSaver):
            res["bytes_per_step"] = peer.bytes_per_step()
        peer.close()
        closed = True
        res["messages"] = total
        if not isinstance(peer, Convstore):
            res["bytes"] = peer.bytes_on_disk()
            res["bytes_per_message"] = res["bytes"] / total
        res["probe"] = probe(name, folder, sample[:20])
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
        log(f"  {name}: ERROR {res['error']}")
    finally:
        if not closed:
            with contextlib.suppress(Exception):
                peer.close()
        shutil.rmtree(folder, ignore_errors=True)
    return res


def measure_convstore_queries(
    peer: Convstore, res: Json, sample: Sequence[str], mode: Mode, total: int
) -> None:
    """The query layer and compaction, each recorded as an error (with its traceback) rather
    than ending the system's run when it breaks: the figures before it still count."""
    reason = query_layer_reason()
    if reason:
        res["query_skipped"] = reason
    else:
        try:
            log("  convstore: cold build of catalog + index")
            t, _ = timed(peer.store.refresh)
            res["cold_build_s"] = t / 1e9
            res["cache_bytes"] = peer.cache_bytes()
            res["cache_over_segments"] = res["cache_bytes"] / peer.segment_bytes()
            log("  convstore: search")
            res["search"] = measure_search(peer, mode)
            res["search_newest"] = measure_search(NewestConvstore(peer), mode)
            log("  convstore: stats")
            res["stats"] = measure_stats_convstore(peer, mode)
            res["refresh"] = measure_refresh(peer, sample, mode)
            total += res["refresh"]["probes"]
            if total < 1_000_000:  # a second cold build; at 1M the first one says enough
                t, _ = timed(peer.store.reindex)
                res["rebuild_s"] = t / 1e9
        except Exception as e:
            res["query_error"] = f"{type(e).__name__}: {e}"
            res["query_traceback"] = traceback.format_exc()
            log(f"  convstore: query layer ERROR {res['query_error']}")
    reason = compaction_reason()
    if reason:
        res["compaction_skipped"] = reason
        return
    try:
        log("  convstore: compaction")
        res["compaction"] = measure_compaction(peer, sample, total)
        res["recent_after_compaction"] = measure_recent(peer, sample, mode)
        if "search" in res:
            # Compaction replaced every file the catalog had ingested: what catching up costs.
            t, _ = timed(peer.store.refresh)
            res["refresh_after_compaction_s"] = t / 1e9
            res["search_after_compaction"] = measure_search(peer, mode)
    except Exception as e:
        res["compaction_error"] = f"{type(e).__name__}: {e}"
        res["compaction_traceback"] = traceback.format_exc()
        log(f"  convstore: compaction ERROR {res['compaction_error']}")


class NewestConvstore(Peer):
    """convstore's search ordered newest first, to stand beside ``llm logs -q --latest``."""

    can_search = True
    name = "convstore newest"

    def __init__(self, inner: Convstore) -> None:
        self.inner = inner

    def _open(self) -> None:
        pass

    def append(self, msg: WorkMessage) -> None:
        raise NotImplementedError

    def recent(self, session_id: str, n: int = 20) -> list[Turn]:
        raise NotImplementedError

    def search(
        self,
        word: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 20,
    ) -> list[Hit]:
        hits = self.inner.store.search(word, since=since, until=until, limit=limit, order="newest")
        return as_hits(hits)

    def close(self) -> None:
        pass


# -- the probe: a separate process that opens a loaded store ---------------------------------


PROBE = r"""
import json, sys, time

def peak_kb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a process started by a
    # large parent would report the parent's peak; VmHWM belongs to this address space.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def ms(t0):
    return (time.perf_counter_ns() - t0) / 1e6

name, folder, word, query_layer, *sids = sys.argv[1:]
out = {"interpreter_mb": peak_kb() / 1024}
t0 = time.perf_counter_ns()
if name == "convstore":
    from convstore import Store
    out["import_ms"] = ms(t0)
    t0 = time.perf_counter_ns()
    store = Store(folder + "/store")
    out["open_ms"] = ms(t0)
    t0 = time.perf_counter_ns()
    store.session(sids[0]).recent(20)
    out["first_recent_ms"] = ms(t0)
    for sid in sids:
        store.session(sid).recent(20)
    if query_layer == "yes":
        t0 = time.perf_counter_ns()
        store.search(word, limit=20)
        out["first_search_ms"] = ms(t0)
        t0 = time.perf_counter_ns()
        store.stats()
        out["first_stats_ms"] = ms(t0)
    store.close()
else:
    from pathlib import Path
    from benchmarks.peers import PEERS
    out["import_ms"] = ms(t0)
    peer = {c.name: c for c in PEERS}[name]()
    t0 = time.perf_counter_ns()
    peer.setup(Path(folder))  # imports the peer's framework, as its first use in an app does
    out["open_ms"] = ms(t0)
    t0 = time.perf_counter_ns()
    peer.recent(sids[0], 20)
    out["first_recent_ms"] = ms(t0)
    for sid in sids:
        peer.recent(sid, 20)
    if peer.can_search:
        t0 = time.perf_counter_ns()
        peer.search(word, limit=20)
        out["first_search_ms"] = ms(t0)
    peer.close()
out["peak_rss_mb"] = peak_kb() / 1024
print(json.dumps(out))
"""


def probe(name: str, folder: Path, session_ids: Sequence[str]) -> Json:
    """Open a loaded store in a fresh interpreter that imports only that system; return the
    time of each first call and the process's peak resident memory."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    query = "yes" if query_layer_reason() is None else "no"
    out = subprocess.run(
        [sys.executable, "-c", PROBE, name, str(folder), COMMON_WORD, query, *session_ids],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    lines = out.stdout.strip().splitlines()
    got: Json = json.loads(lines[-1])
    if len(lines) > 1:  # a library that prints to stdout is worth knowing about
        got["stdout_extra"] = "\n".join(lines[:-1])[:500]
    return got


# -- separate experiments ---------------------------------------------------------------------


OPEN_PROBE = r"""
import json, sys, time
t0 = time.perf_counter_ns()
from convstore import Store
t1 = time.perf_counter_ns()
path, sid = sys.argv[1], sys.argv[2]
t2 = time.perf_counter_ns()
st = Store(path)
t3 = time.perf_counter_ns()
st.session(sid).recent(20)
t4 = time.perf_counter_ns()
st.sessions(limit=20)
t5 = time.perf_counter_ns()
print(json.dumps({"import_ms": (t1 - t0) / 1e6, "open_ms": (t3 - t2) / 1e6,
                  "open_and_first_recent_ms": (t4 - t2) / 1e6,
                  "list_20_newest_sessions_ms": (t5 - t4) / 1e6}))
"""

SQLITE_OPEN_PROBE = r"""
import json, sqlite3, sys, time
path, sid = sys.argv[1], sys.argv[2]
t0 = time.perf_counter_ns()
conn = sqlite3.connect(path)
conn.execute("SELECT role, content FROM messages WHERE session_id = ? "
             "ORDER BY created_at DESC, id DESC LIMIT 20", (sid,)).fetchall()
t1 = time.perf_counter_ns()
conn.execute("SELECT id FROM sessions ORDER BY updated_at DESC LIMIT 20").fetchall()
t2 = time.perf_counter_ns()
print(json.dumps({"open_and_first_recent_ms": (t1 - t0) / 1e6,
                  "list_20_newest_sessions_ms": (t2 - t1) / 1e6}))
"""


def run_json(code: str, *args: str) -> Json:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def bench_open(root: Path, mode: Mode) -> Json:
    """A store of ``mode.open_sessions`` sessions (5 messages each), opened by a fresh process:
    Store() alone, Store() plus the first recent(20), and the 20 newest sessions. Beside it, a
    chat app's SQLite file with the same messages."""
    n_sessions = mode.open_sessions
    msgs = list(messages(n_sessions * 5, seed=11, sessions=n_sessions))
    folder = root / "open"
    log(f"open: building a store of {n_sessions:,} sessions")
    cs = Convstore(folder, sync="close")
    for part in chunks(msgs, 5_000):
        cs.append_batch(part)
    cs.close()
    sq = SqliteChat(folder / "sqlite")
    for part in chunks(msgs, 10_000):
        sq.append_batch(part)
    sq.close()
    sid = msgs[len(msgs) // 2].session_id
    runs = [run_json(OPEN_PROBE, str(folder / "store"), sid) for _ in range(mode.repeats)]
    sruns = [
        run_json(SQLITE_OPEN_PROBE, str(folder / "sqlite" / SqliteChat.filename), sid)
        for _ in range(mode.repeats)
    ]
    shutil.rmtree(folder, ignore_errors=True)
    out: Json = {"sessions": n_sessions, "messages": len(msgs), "runs": len(runs)}
    for key in runs[0]:
        out[key] = median([r[key] for r in runs])
    out["sqlite"] = {k: median([r[k] for r in sruns]) for k in sruns[0]}
    return out


def bench_recent_scaling(root: Path, mode: Mode) -> Json:
    """recent(20) p50 in a 1k-message store, and in single sessions of growing length."""
    out: Json = {}
    msgs = list(messages(1_000))
    cs = Convstore(root / "small")
    cs.append_batch(msgs)
    ids = sorted({m.session_id for m in msgs})
    out["store_1k"] = measure_recent(cs, ids, mode)
    cs.close()
    shutil.rmtree(root / "small", ignore_errors=True)
    for length in mode.long_sessions:
        log(f"recent: one session of {length:,} messages")
        cs = Convstore(root / f"long{length}", sync="close")
        long_msgs = list(messages(length, seed=5, sessions=1))
        for part in chunks(long_msgs, 1_000):
            cs.append_batch(part)
        sid = long_msgs[0].session_id
        cs.close()
        reader = Convstore(root / f"long{length}")
        t, _ = timed(lambda: reader.recent(sid, 20))  # noqa: B023 (called right here)
        res = measure_recent(reader, [sid] * 200, mode)
        res["first_call_ms"] = t / 1e6
        out[f"session_{length}"] = res
        reader.close()
        shutil.rmtree(root / f"long{length}", ignore_errors=True)
    return out


APPEND_SESSIONS = 100
SPREAD = (1, 100, 127, 129, 200, 1_000)


def bench_spread(root: Path, mode: Mode) -> Json:
    """Single appends round-robin over 1 to 1,000 sessions of one store, durable and relaxed:
    the store keeps a bounded number of segment files open, and this finds where it matters."""
    out: Json = {}
    msgs = list(messages(2_000, seed=13, sessions=1))
    for sync in ("always", "interval"):
        rates: Json = {}
        for n in SPREAD:
            folder = root / f"spread-{sync}-{n}"
            cs = Convstore(folder, sync=sync)
            sids = [f"w{i}" for i in range(n)]
            for sid in sids:
                cs.handle(sid).append("user", "warm-up")
            calls = [dataclasses.replace(m, session_id=sids[i % n]) for i, m in enumerate(msgs)]
            series = []
            for r in range(mode.repeats):
                part = calls[r * 400 : (r + 1) * 400] or calls[:400]
                ns = []
                for m in part:
                    t0 = time.perf_counter_ns()
                    cs.append(m)
                    ns.append(time.perf_counter_ns() - t0)
                series.append(ns)
            cs.close()
            shutil.rmtree(folder, ignore_errors=True)
            rates[str(n)] = rate(series)["per_s"]
        out[sync] = rates
    return out


def bench_checkpoints(root: Path, mode: Mode) -> Json:
    """LangGraph checkpoint bytes per step: SqliteSaver, and convstore's saver when installed,
    both driven by peers.LanggraphSqliteSaver's step (a chat graph saving after every message)."""
    msgs = list(messages(mode.checkpoint_steps, seed=3))
    out: Json = {"steps": len(msgs), "sessions": len({m.session_id for m in msgs})}
    sq = LanggraphSqliteSaver()
    try:
        sq.setup(root / "lg-sqlite")
    except PeerUnavailable as e:
        return {"skipped": e.reason}
    t, _ = timed(lambda: append_all(sq, msgs))
    out["sqlitesaver"] = {
        "bytes_per_step": sq.bytes_per_step(),
        "steps_per_s": len(msgs) / (t / 1e9),
    }
    sq.close()
    reason = module_missing("convstore.integrations.langgraph")
    if reason:
        out["convstore"] = {"skipped": reason}
        return out
    saver_cls: Any = importlib.import_module("convstore.integrations.langgraph").ConvstoreSaver

    class ConvstoreSaverPeer(LanggraphSqliteSaver):
        name = "convstore-saver"

        def _open(self) -> None:
            from langgraph.checkpoint.base import empty_checkpoint

            self._empty_checkpoint = empty_checkpoint
            self.store = Store(self.dir / "store")
            self.saver = saver_cls(self.store)
            self.steps = 0

        def bytes_per_step(self) -> float:
            size = sum(
                p.stat().st_size
                for p in (self.dir / "store").rglob("*")
                if p.is_file() and ".cache" not in p.parts
            )
            return size / max(1, self.steps)

        def close(self) -> None:
            self.store.close()

    cp = ConvstoreSaverPeer()
    try:
        cp.setup(root / "lg-convstore")
        t, _ = timed(lambda: append_all(cp, msgs))
        out["convstore"] = {
            "bytes_per_step": cp.bytes_per_step(),
            "steps_per_s": len(msgs) / (t / 1e9),
        }
        if compaction_reason() is None:
            cp.store.compact()
            out["convstore"]["bytes_per_step_compacted"] = cp.bytes_per_step()
    except Exception as e:
        out["convstore"] = {
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }
    finally:
        with contextlib.suppress(Exception):
            cp.close()
    return out


def append_all(peer: Peer, msgs: Sequence[WorkMessage]) -> None:
    for m in msgs:
        peer.append(m)


def fsync_probe(folder: Path, n: int = 300) -> Json:
    """p50 of a 700-byte append + fdatasync (and + fsync) in ``folder``: the durable-append
    ceiling of the file system the stores live on."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    out: Json = {}
    try:
        for label, sync in (("fdatasync", os.fdatasync), ("fsync", os.fsync)):
            ns = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                os.write(fd, b"x" * 700)
                sync(fd)
                ns.append(time.perf_counter_ns() - t0)
            s = sorted(ns)
            out[f"{label}_p50_ms"] = pct(s, 0.5)
            out[f"{label}_p99_ms"] = pct(s, 0.99)
            out[f"{label}_per_s"] = 1e3 / pct(s, 0.5)
    finally:
        os.close(fd)
        path.unlink()
    out["filesystem"] = filesystem_of(folder)
    out["path"] = str(folder)
    return out


def filesystem_of(path: Path) -> str:
    best, fs = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fs
    real = str(path.resolve())
    for line in mounts:
        parts = line.split()
        inside = len(parts) >= 3 and (
            real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")
        )
        if inside and len(parts[1]) > len(best):
            best, fs = parts[1], f"{parts[2]} on {parts[0]} (mounted at {parts[1]})"
    return fs


def machine() -> Json:
    info: Json = {"platform": platform.platform(), "python": sys.version.split()[0]}
    with contextlib.suppress(OSError):
        cpu = Path("/proc/cpuinfo").read_text()
        models = [
            ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")
        ]
        info["cpu"] = models[0] if models else "unknown"
        info["cpus"] = len(models) or os.cpu_count()
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gb"] = round(int(mem) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    info["sqlite"] = sqlite3.sqlite_version
    return info


DISTRIBUTIONS = (
    "convstore",
    "duckdb",
    "tantivy",
    "pyarrow",
    "zstandard",
    "orjson",
    "langchain-core",
    "langchain-community",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "openai-agents",
    "psutil",
)


def versions() -> Json:
    out: Json = {}
    for dist in DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


# -- the run ----------------------------------------------------------------------------------


def run(mode: Mode, root: Path, only: set[str] | None) -> Json:
    started = time.time()
    result: Json = {
        "mode": mode.name,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python -m benchmarks.bench --{mode.name}",
        "machine": machine(),
        "versions": versions(),
        "store_dir": str(root),
        "fsync": {
            "stores": fsync_probe(root / "fsync"),
            "repo": fsync_probe(ROOT / "benchmarks" / ".fsync"),
        },
        "mode_settings": dataclasses.asdict(mode),
        "scales": {},
    }
    shutil.rmtree(ROOT / "benchmarks" / ".fsync", ignore_errors=True)
    for n in mode.scales:
        log(f"scale {n:,}: generating the workload")
        msgs = list(messages(n))
        sids = sorted({m.session_id for m in msgs})
        sample = random.Random(42).sample(sids, min(len(sids), mode.recent_sessions))
        # Appends go to 100 sessions in both modes; bench_spread shows how the count matters.
        writers = sample[:APPEND_SESSIONS]
        singles = extra_messages(20 + mode.repeats * mode.singles, writers, seed=99, group=1)
        batch = extra_messages((1 + mode.repeats * mode.batches) * 100, writers, seed=98, group=100)
        scale: Json = {"messages": n, "sessions": len(sids), "systems": {}}
        for name, make in systems():
            if only and name not in only:
                continue
            log(f"scale {n:,}: {name}")
            scale["systems"][name] = measure_system(
                name, make, msgs, sample, singles, batch, mode, root / f"s{n}"
            )
        result["scales"][str(n)] = scale
        del msgs
        gc.collect()
    if not only or "convstore" in only:
        result["open"] = bench_open(root, mode)
        result["recent_scaling"] = bench_recent_scaling(root, mode)
        log("appends spread over more and more sessions")
        result["spread"] = bench_spread(root, mode)
        log("checkpoints: bytes per step")
        result["checkpoints"] = bench_checkpoints(root, mode)
    result["seconds"] = time.time() - started
    result["targets"] = targets(result)
    return result


# -- targets (issues 2, 3, 5 and 7) -----------------------------------------------------------


def get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(r: Json) -> list[Json]:
    scales = sorted(int(s) for s in r["scales"])
    big = str(scales[-1]) if scales else None
    small = str(scales[0]) if scales else None

    def cs(scale: str | None, *path: str) -> Any:
        return get(r, "scales", scale or "", "systems", "convstore", *path)

    def sq(scale: str | None, *path: str) -> Any:
        return get(r, "scales", scale or "", "systems", "sqlite-chat", *path)

    out: list[Json] = []

    def add(
        issue: int, what: str, target: str, value: Any, ok: bool | None, unit: str = ""
    ) -> None:
        shown = "not measured" if value is None else f"{f(value)}{unit}"
        out.append(
            {
                "issue": issue,
                "what": what,
                "target": target,
                "measured": shown,
                "met": ok if value is not None else None,
            }
        )

    def at_most(v: Any, limit: float) -> bool | None:
        return None if v is None else bool(v <= limit)

    def at_least(v: Any, limit: float) -> bool | None:
        return None if v is None else bool(v >= limit)

    v = cs(small, "append", "per_s")
    add(
        2, f"durable single append ({small} msgs)", ">= 4,500 msg/s", v, at_least(v, 4500), " msg/s"
    )
    v = cs(small, "append_relaxed", "per_s")
    add(
        2,
        f"relaxed single append ({small} msgs)",
        ">= 30,000 msg/s",
        v,
        at_least(v, 30000),
        " msg/s",
    )
    v = cs(small, "batch_relaxed", "per_s")
    add(
        2,
        f"relaxed extend of 100 ({small} msgs; the SQLite WAL batch it is set against does not"
        " fsync either)",
        ">= 150,000 msg/s",
        v,
        at_least(v, 150000),
        " msg/s",
    )
    v = cs(small, "batch", "per_s")
    add(2, f"durable extend of 100 ({small} msgs; one fsync per call)", "(none)", v, None, " msg/s")
    v = cs(small, "recent", "p50_ms")
    add(2, f"recent(20) p50 warm ({small} msgs)", "<= 0.05 ms", v, at_most(v, 0.05), " ms")
    base = get(r, "recent_scaling", "store_1k", "p50_ms")
    top = cs(big, "recent", "p50_ms")
    ratio = None if base is None or top is None else top / base
    add(2, f"recent(20) p50 at {big} msgs / at 1k msgs", "<= 2x", ratio, at_most(ratio, 2.0), "x")
    lengths = [k for k in (get(r, "recent_scaling") or {}) if k.startswith("session_")]
    if len(lengths) >= 2:
        lo_k, hi_k = (
            sorted(lengths, key=lambda k: int(k.split("_")[1]))[0],
            sorted(lengths, key=lambda k: int(k.split("_")[1]))[-1],
        )
        a, b = get(r, "recent_scaling", lo_k, "p50_ms"), get(r, "recent_scaling", hi_k, "p50_ms")
        ratio = None if a is None or b is None else b / a
        add(
            2,
            f"recent(20) p50, one session of {hi_k.split('_')[1]} / of {lo_k.split('_')[1]} msgs",
            "<= 2x",
            ratio,
            at_most(ratio, 2.0),
            "x",
        )
    v = get(r, "open", "open_and_first_recent_ms")
    n_open = get(r, "open", "sessions")
    add(
        2,
        f"open a store of {n_open} sessions + first recent(20)",
        "<= 100 ms" + ("" if n_open == 10_000 else " (for 10000 sessions: run --full)"),
        v,
        at_most(v, 100) if n_open == 10_000 else None,
        " ms",
    )
    v = get(r, "open", "list_20_newest_sessions_ms")
    add(2, f"then list the 20 newest of {n_open} sessions", "(no target)", v, None, " ms")
    for label in ("rare", "common", "rare + date", "common + date"):
        p50 = cs(big, "search", label, "p50_ms")
        p99 = cs(big, "search", label, "p99_ms")
        add(3, f"search {label}, p50 ({big} msgs)", "<= 5 ms", p50, at_most(p50, 5), " ms")
        add(3, f"search {label}, p99 ({big} msgs)", "<= 20 ms", p99, at_most(p99, 20), " ms")
    v = cs(big, "stats", "p50_ms")
    add(3, f"stats warm ({big} msgs)", "<= 100 ms", v, at_most(v, 100), " ms")
    v = cs(big, "refresh", "after_one_append_p50_ms")
    add(3, f"refresh after one append ({big} msgs)", "<= 50 ms", v, at_most(v, 50), " ms")
    v = cs(big, "cold_build_s")
    add(3, f"cold build of catalog + index ({big} msgs)", "<= 60 s", v, at_most(v, 60), " s")
    v = cs(big, "cache_over_segments")
    add(3, f"catalog + index size / segments ({big} msgs)", "<= 1.5x", v, at_most(v, 1.5), "x")
    found = cs(big, "refresh", "probes_found_by_search")
    probes = cs(big, "refresh", "probes")
    add(
        3,
        "a message is searchable after one refresh",
        "all probes found",
        None if found is None else f"{found}/{probes}",
        None if found is None else found == probes,
    )
    a = cs(big, "compaction", "bytes_per_message")
    b = sq(big, "bytes_per_message")
    ratio = None if a is None or b is None else a / b
    add(
        5,
        f"bytes/msg after compaction vs SQLite ({big} msgs)",
        "<= 0.35x",
        ratio,
        at_most(ratio, 0.35),
        "x",
    )
    v = cs(big, "compaction", "seconds")
    add(5, f"compaction time ({big} msgs)", "<= 60 s", v, at_most(v, 60), " s")
    v = cs(big, "compaction", "append_max_ms")
    add(5, "longest append stall during compaction", "<= 50 ms", v, at_most(v, 50), " ms")
    v = cs(big, "compaction", "appends_lost")
    add(5, "appends lost during compaction", "0", v, None if v is None else v == 0)
    a = get(r, "checkpoints", "convstore", "bytes_per_step")
    b = get(r, "checkpoints", "sqlitesaver", "bytes_per_step")
    ratio = None if a is None or b is None else a / b
    add(
        7,
        "LangGraph bytes per step vs SqliteSaver",
        "much less than SqliteSaver (< 1x)",
        ratio,
        None if ratio is None else ratio < 1,
        "x",
    )
    return out


# -- rendering docs/benchmarks.md ---------------------------------------------------------------


def f(v: Any, digits: int = 3) -> str:
    """A figure with ``digits`` significant digits and thousands separators."""
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if v != v:  # NaN
        return "-"
    if abs(v) >= 10 ** (digits - 1):
        return f"{v:,.0f}"
    return f"{v:,.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}g}"


def ratio(a: Any, b: Any) -> str:
    if a is None or b is None or not b or a != a or b != b:
        return "-"
    return f"{a / b:.2g}x" if a / b < 10 else f"{a / b:,.0f}x"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render(r: Json) -> str:
    m = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        "convstore beside the peers it replaces, on one deterministic chat workload, measured in",
        "the same run on the same machine. Generated by `benchmarks/bench.py` from",
        f"`benchmarks/results/{result_name(r)}`; do not edit by hand.",
        "",
        f"- **Date:** {r['date']}; mode `{r['mode']}`; the run took {fmt_duration(r['seconds'])}.",
        f"- **Reproduce:** `{r['command']}` (or `make bench` for the quick mode, `make bench-full`",
        "  for this one), from the repository root with the `bench` extra installed.",
        f"- **Machine:** {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs,"
        f" {m.get('memory_gb', '?')} GB RAM, {m['platform']}, Python {m['python']},"
        f" SQLite {m['sqlite']}. Load average at the start:"
        f" {m.get('load_average_at_start', '?')} (other jobs shared the machine).",
        "- **Versions:** "
        + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v is not None)
        + ".",
    ]
    fs = r["fsync"]["stores"]
    repo = r["fsync"]["repo"]
    lines += [
        f"- **Where the stores lived:** `{fs['path'].rsplit('/', 1)[0]}`, {fs['filesystem']}. A"
        f" 700-byte append + `fdatasync` there takes p50 {f(fs['fdatasync_p50_ms'])} ms (p99"
        f" {f(fs['fdatasync_p99_ms'])} ms), about {f(fs['fdatasync_per_s'])}/s: the ceiling of a"
        f" durable single append; `fsync` p50 {f(fs['fsync_p50_ms'])} ms. In the repository folder"
        f" ({repo['filesystem']}): `fdatasync` p50 {f(repo['fdatasync_p50_ms'])} ms, `fsync` p50"
        f" {f(repo['fsync_p50_ms'])} ms.",
        "",
    ]
    lines += render_headline(r)
    lines += render_targets(r)
    for scale in sorted(r["scales"], key=int):
        lines += render_scale(r, scale)
    lines += render_experiments(r)
    lines += METHOD.splitlines()
    return "\n".join(lines) + "\n"


def result_name(r: Json) -> str:
    return f"{r['date'][:10]}-{r['mode']}.json"


def sys_get(r: Json, scale: str, name: str, *path: str) -> Any:
    return get(r, "scales", scale, "systems", name, *path)


def vs(peer_value: Any, mine: Any, unit: str) -> str:
    """A peer's figure followed by convstore/peer."""
    return f"{f(peer_value)}{unit} ({ratio(mine, peer_value)})"


def render_headline(r: Json) -> list[str]:
    scales = sorted(r["scales"], key=int)
    if not scales:
        return []
    lines = ["## Headline", ""]
    for scale in scales:
        sc = r["scales"][scale]
        c = sc["systems"].get("convstore", {})
        lines += [
            f"At {int(scale):,} messages ({sc['sessions']:,} sessions). Each cell: the peer's"
            " figure, then convstore/peer from the same run (for msg/s above 1x favours"
            " convstore; for ms, bytes and MB below 1x does).",
            "",
        ]
        c_bytes = get(c, "compaction", "bytes_per_message") or get(c, "bytes_per_message_hot")
        rows = []
        for name, p in sc["systems"].items():
            if name == "convstore":
                continue
            if "skipped" in p or "error" in p:
                why = p.get("skipped") or p.get("error", "")
                rows.append([name, f"skipped: {why}", "", "", "", "", ""])
                continue
            relaxed = name in RELAXED
            mine = get(c, "append_relaxed" if relaxed else "append", "per_s")
            append = vs(get(p, "append", "per_s"), mine, "/s")
            mine = get(c, "batch_relaxed" if relaxed else "batch", "per_s")
            batch = vs(get(p, "batch", "per_s"), mine, "/s")
            rows.append(
                [
                    name,
                    append[:-1] + " vs relaxed)" if relaxed else append,
                    batch[:-1] + " vs relaxed)" if relaxed else batch,
                    vs(get(p, "recent", "p50_ms"), get(c, "recent", "p50_ms"), " ms"),
                    search_cell(c, p),
                    vs(get(p, "bytes_per_message"), c_bytes, " B"),
                    vs(get(p, "probe", "peak_rss_mb"), get(c, "probe", "peak_rss_mb"), " MB"),
                ]
            )
        head = ["peer", "single append", "extend(100)", "recent(20) p50"]
        lines += table([*head, "search 'common' p50", "bytes/msg", "peak RSS"], rows)
        lines += [
            "",
            f"convstore at this scale: durable append {f(get(c, 'append', 'per_s'))}/s, relaxed"
            f" {f(get(c, 'append_relaxed', 'per_s'))}/s, extend(100) {f(get(c, 'batch', 'per_s'))}"
            f" msg/s durable and {f(get(c, 'batch_relaxed', 'per_s'))} msg/s relaxed"
            f", recent(20) p50 {f(get(c, 'recent', 'p50_ms'))} ms, search 'common' p50"
            f" {f(get(c, 'search', 'common', 'p50_ms'))} ms, {f(get(c, 'bytes_per_message_hot'))}"
            f" B/msg hot and {f(get(c, 'compaction', 'bytes_per_message'))} B/msg after"
            " compaction (the bytes/msg ratios use the compacted figure when there is one), peak"
            f" RSS {f(get(c, 'probe', 'peak_rss_mb'))} MB.",
            "",
        ]
    return lines


def search_cell(c: Json, p: Json) -> str:
    if "search" not in p:
        return "no search"
    return vs(get(p, "search", "common", "p50_ms"), get(c, "search", "common", "p50_ms"), " ms")


def render_targets(r: Json) -> list[str]:
    lines = ["## Targets from the issues", ""]
    rows = []
    for t in r["targets"]:
        verdict = "not measured" if t["measured"] == "not measured" else "-"
        met = {True: "met", False: "**not met**", None: verdict}[t["met"]]
        rows.append([f"#{t['issue']}", t["what"], t["target"], t["measured"], met])
    lines += table(["issue", "what", "target", "measured", ""], rows)
    return [*lines, ""]


def size_cell(p: Json) -> str:
    if "bytes_per_message" in p:
        return f(p["bytes_per_message"])
    hot = f(p.get("bytes_per_message_hot"))
    sealed = get(p, "compaction", "bytes_per_message")
    return hot + " hot" + (f", {f(sealed)} sealed" if sealed is not None else "")


def render_scale(r: Json, scale: str) -> list[str]:
    sc = r["scales"][scale]
    lines = [f"## {int(scale):,} messages, {sc['sessions']:,} sessions", ""]
    rows = []
    skipped = []
    for name, p in sc["systems"].items():
        if "skipped" in p or "error" in p:
            skipped.append(f"- **{name}** skipped: {p.get('skipped') or p.get('error')}")
            continue
        a = p.get("append")
        rows.append(
            [
                name,
                durability(name),
                f(get(p, "load", "per_s")),
                f(get(a, "per_s")),
                f(get(a, "p50_ms")),
                f(get(a, "p99_ms")),
                f(get(p, "batch", "per_s")),
                f(get(p, "recent", "p50_ms")),
                f(get(p, "recent", "p99_ms")),
                size_cell(p),
                f(get(p, "probe", "peak_rss_mb")),
            ]
        )
        if "append_relaxed" in p:
            a = p["append_relaxed"]
            relaxed = [f(get(a, "per_s")), f(get(a, "p50_ms")), f(get(a, "p99_ms"))]
            batch = f(get(p, "batch_relaxed", "per_s"))
            label = "convstore (interval)"
            rows.append([label, durability(label), "", *relaxed, batch, "", "", "", ""])
    lines += ["### Writes, reads, size", ""]
    head = ["system", "durability", "bulk load msg/s", "append msg/s", "append p50 ms"]
    head += ["append p99 ms", "extend(100) msg/s", "recent p50 ms", "recent p99 ms"]
    lines += table([*head, "bytes/msg", "peak RSS MB"], rows)
    if skipped:
        lines += ["", *skipped]
    lines += ["", "### Search (limit 20), p50 / p99 ms", ""]
    c = sc["systems"].get("convstore", {})
    found = [
        (label, p.get(key))
        for name, p in sc["systems"].items()
        for key, label in (("search", name), ("search_newest", f"{name}, newest first"))
    ]
    found.append(("convstore, after compaction", c.get("search_after_compaction")))
    srows = [
        [label]
        + [f"{f(get(s, q, 'p50_ms'))} / {f(get(s, q, 'p99_ms'))}" for q, _, _ in SEARCH_QUERIES]
        + [str(s.get("rare_hits", "-"))]
        for label, s in found
        if s
    ]
    lines += table(["system", *[q for q, _, _ in SEARCH_QUERIES], "hits for the rare word"], srows)
    lines += [
        "",
        "`sqlite-chat` searches with `LIKE '%word%'` (a chat app without a full-text index);"
        " `sqlite-fts5` is the `llm` CLI's FTS5 table ranked by BM25, and newest first like"
        " `llm logs -q --latest`. The date filter is one month (May 2026) of the year.",
        "",
    ]
    if c and "skipped" not in c:
        lines += ["### convstore only", ""]
        lines += [f"- {k}: {v}" for k, v in convstore_items(r, scale, c) if v]
        lines.append("")
    return lines


def convstore_items(r: Json, scale: str, c: Json) -> list[tuple[str, str | None]]:
    items: list[tuple[str, str | None]] = [
        ("query layer skipped", c.get("query_skipped")),
        ("query layer failed", c.get("query_error")),
        ("compaction skipped", c.get("compaction_skipped")),
        ("compaction failed", c.get("compaction_error")),
    ]
    if "cold_build_s" in c:
        items += [
            ("cold build of catalog + search index", f"{f(c['cold_build_s'])} s"),
            (
                "reindex (drop and rebuild)",
                f"{f(c.get('rebuild_s'))} s" if "rebuild_s" in c else None,
            ),
            (
                "catalog + index size / segment size",
                f"{f(c.get('cache_over_segments'))}x ({f(c.get('cache_bytes'))} B)",
            ),
        ]
    if "refresh" in c:
        rf = c["refresh"]
        items += [
            ("refresh with nothing new, p50", f"{f(rf['nothing_new_p50_ms'])} ms"),
            (
                "refresh after one append, p50 / p99",
                f"{f(rf['after_one_append_p50_ms'])} / {f(rf['after_one_append_p99_ms'])} ms;"
                f" {rf['probes_found_by_search']}/{rf['probes']} appended probes found by search"
                " right after",
            ),
        ]
    if "stats" in c:
        sql = f(sys_get(r, scale, "sqlite-chat", "stats", "p50_ms"))
        st = c["stats"]
        items.append(
            (
                "stats, p50 / p99",
                f"{f(st['p50_ms'])} / {f(st['p99_ms'])} ms (SQLite, the same figures as SQL"
                f" over the chat schema: {sql} ms)",
            )
        )
    if "compaction" in c:
        cp = c["compaction"]
        items += [
            ("compaction", f"{f(cp['seconds'])} s for {cp['messages']:,} messages"),
            (
                "appends by another process during compaction",
                f"{cp['appends_during']} appends, p50 {f(cp['append_p50_ms'])} ms, p99"
                f" {f(cp['append_p99_ms'])} ms, longest {f(cp['append_max_ms'])} ms,"
                f" lost {cp['appends_lost']}",
            ),
            (
                "bytes/msg hot, after compaction",
                f"{f(c.get('bytes_per_message_hot'))}, {f(cp['bytes_per_message'])}",
            ),
        ]
    if "refresh_after_compaction_s" in c:
        items.append(("refresh after compaction", f"{f(c['refresh_after_compaction_s'])} s"))
    if "recent_after_compaction" in c:
        items.append(
            (
                "recent(20) p50 after compaction",
                f"{f(get(c, 'recent_after_compaction', 'p50_ms'))} ms",
            )
        )
    items.append(
        (
            "fresh process (import, open, first recent(20), first search, first stats)",
            probe_line(c.get("probe")),
        )
    )
    return items


def probe_line(p: Json | None) -> str | None:
    if not p:
        return None
    if "error" in p:
        return f"failed: {p['error']}"
    keys = (
        "import_ms",
        "open_ms",
        "first_recent_ms",
        "first_search_ms",
        "first_stats_ms",
    )
    return (
        ", ".join(f"{f(p[k])} ms" for k in keys if k in p)
        + f"; peak RSS {f(p.get('peak_rss_mb'))} MB"
    )


def render_experiments(r: Json) -> list[str]:
    lines: list[str] = []
    o = r.get("open")
    if o:
        lines += [
            f"## Opening a store of {o['sessions']:,} sessions",
            "",
            f"A fresh process opens a store of {o['sessions']:,} sessions"
            f" ({o['messages']:,} messages) and reads one session's last 20 messages;"
            f" medians of {o['runs']} processes."
            f" `import convstore` takes {f(o['import_ms'])} ms before that.",
            "",
        ]
        lines += table(
            ["", "convstore", "SQLite (chat schema)"],
            [
                ["Store() alone", f"{f(o['open_ms'])} ms", ""],
                [
                    "open + first recent(20)",
                    f"{f(o['open_and_first_recent_ms'])} ms",
                    f"{f(get(o, 'sqlite', 'open_and_first_recent_ms'))} ms",
                ],
                [
                    "then the 20 most recently active sessions",
                    f"{f(o['list_20_newest_sessions_ms'])} ms",
                    f"{f(get(o, 'sqlite', 'list_20_newest_sessions_ms'))} ms",
                ],
            ],
        )
        lines.append("")
    rs = r.get("recent_scaling")
    if rs:
        lines += ["## recent(20) as a store and a session grow", ""]
        rows = [
            [
                "a 1,000-message store (20 sessions)",
                f(get(rs, "store_1k", "p50_ms")),
                f(get(rs, "store_1k", "p99_ms")),
                "",
            ]
        ]
        for scale in sorted(r["scales"], key=int):
            rows.append(
                [
                    f"the {int(scale):,}-message store above",
                    f(sys_get(r, scale, "convstore", "recent", "p50_ms")),
                    f(sys_get(r, scale, "convstore", "recent", "p99_ms")),
                    "",
                ]
            )
        for k in sorted(
            (k for k in rs if k.startswith("session_")), key=lambda k: int(k.split("_")[1])
        ):
            rows.append(
                [
                    f"one session of {int(k.split('_')[1]):,} messages",
                    f(rs[k]["p50_ms"]),
                    f(rs[k]["p99_ms"]),
                    f(rs[k].get("first_call_ms")),
                ]
            )
        lines += table(["", "p50 ms", "p99 ms", "first call in a fresh Store (ms)"], rows)
        lines.append("")
    sp = r.get("spread")
    if sp:
        counts = list(next(iter(sp.values())))
        lines += [
            "## Single appends spread over many sessions",
            "",
            "Appends round-robin over N sessions of one store (2,000-message workload, 400 calls"
            " per repeat, median msg/s). convstore keeps a bounded number of segment files open"
            " per `Store`; past it, each append reopens a file (and, relaxed, fsyncs the one it"
            " closes).",
            "",
        ]
        rows = [[sync, *[f(v) for v in rates.values()]] for sync, rates in sp.items()]
        lines += table(["sync", *[f"{n} sessions" for n in counts]], rows)
        lines.append("")
    cp = r.get("checkpoints")
    if cp:
        lines += ["## LangGraph checkpoints: bytes per step", ""]
        if "skipped" in cp:
            lines += [f"Skipped: {cp['skipped']}", ""]
        else:
            lines += [
                f"{cp['steps']:,} chat steps over {cp['sessions']} threads, each step saving a"
                " checkpoint whose `messages` channel holds the thread's whole history (what a"
                " LangGraph chat graph does), driven by `peers.LanggraphSqliteSaver`'s step.",
                "",
            ]
            c = cp.get("convstore", {})
            rows = [
                [
                    "SqliteSaver",
                    f(get(cp, "sqlitesaver", "bytes_per_step")),
                    f(get(cp, "sqlitesaver", "steps_per_s")),
                    "",
                ]
            ]
            if "bytes_per_step" in c:
                rows.append(
                    [
                        "convstore ConvstoreSaver",
                        f(c["bytes_per_step"]),
                        f(c.get("steps_per_s")),
                        f(c.get("bytes_per_step_compacted")),
                    ]
                )
            lines += table(["saver", "bytes/step", "steps/s", "bytes/step after compaction"], rows)
            if "skipped" in c or "error" in c:
                lines += ["", f"convstore's saver: {c.get('skipped') or c.get('error')}"]
            lines.append("")
    return lines


METHOD = """## Method

- **Workload.** `benchmarks/workload.py`: deterministic chat (seed 7) over a year of timestamps,
  about 50 messages per session, user messages 20-400 characters, assistant messages 200-3000
  with code blocks, Zipf vocabulary; `python` is in about a quarter of the messages, `zyzzyva`
  in one in 10,000. Assistant messages carry model, token and latency metadata.
- **Loading.** Every system gets the same messages in global time order through its batch call,
  a tenth of the scale per chunk. Peers load with their default durability (SQLite commits a
  chunk at once); convstore loads as a bulk import does, `Store(sync="close")` with one `extend`
  per session per chunk and the fsyncs at `close()`. The first 1,000 messages are a probe: a
  peer whose measured rate says the scale would take longer than the mode's budget is skipped,
  with that estimate as the reason. Everything after the load uses default durability.
- **Single append.** New messages (another seed) appended one call at a time to 100
  existing sessions of the loaded store, each session read once before (an app appends to a
  conversation it has open), each call timed alone after 20 warm-up calls; the mode's repeats
  of its series (quick: 3 x 100, full: 5 x 300), median of the repeats' rates (messages over
  summed call time, so slow calls count). Each system uses its default durability (see the
  durability column); convstore's relaxed figure is `Store(sync="interval")`, compared with the
  peers that do not fsync per append.
- **extend(100).** 100 new messages of one session per call; peers without a batch call loop.
  convstore is measured twice: durable (one fsync per call) and relaxed (`sync="interval"`);
  peers that do not fsync a commit (marked "vs relaxed") are set against the relaxed figure.
- **recent(20).** The last 20 messages of 100-200 sampled sessions, warm (each session read
  once first). For convstore every call still checks the files (a `stat`), so appends by other
  processes are seen.
- **Search.** Limit 20: a rare word, a common word, each with and without a one-month date
  filter; one warm-up call, then up to 200 calls (50 in the quick mode) within about 4 s per
  query, p50 and p99 by nearest rank (fewer calls when one takes seconds: then p99 is the
  slowest call). The rare word's hit count (limit 1000) is a correctness cross-check between
  systems.
- **Sizes.** Every file of the store after closing it (SQLite's WAL folded back); convstore hot
  is the segments, after compaction the sealed Parquet files; the catalog and search index are
  reported apart as a derived cache.
- **Peak memory.** The peak resident set (`VmHWM`) of a fresh process that opens the loaded
  store, reads 20 sessions, searches and asks for statistics; the process imports only the
  system under test (its dependencies count, the harness does not).
- **Noise.** The machine is shared: other jobs ran beside this one (see the load average above),
  which hits the fsync-bound figures hardest. Ratios are the fairer reading: both sides of a
  ratio ran minutes apart under the same conditions.
- **Statistics.** Medians of repeats, never means; percentiles by nearest rank.
"""


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0]
    )
    group = ap.add_mutually_exclusive_group()
    group.add_argument(
        "--quick", action="store_true", help="10k messages, about a minute (default)"
    )
    group.add_argument("--full", action="store_true", help="10k, 100k and 1M messages, <= 15 min")
    group.add_argument("--render", metavar="RESULTS.json", help="render docs/benchmarks.md again")
    ap.add_argument("--dir", help="where the stores are built (default: a new temporary folder)")
    ap.add_argument("--only", help="comma-separated systems to run (default: all)")
    ap.add_argument(
        "--doc", action="store_true", help="render docs/benchmarks.md (default with --full)"
    )
    args = ap.parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        DOC.write_text(render(results))
        log(f"wrote {DOC}")
        return 0
    mode = FULL if args.full else QUICK
    root = Path(tempfile.mkdtemp(prefix="convstore-bench-", dir=args.dir))
    only = set(args.only.split(",")) if args.only else None
    try:
        results = run(mode, root, only)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / result_name(results)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    log(f"wrote {out}")
    print(summary(results))
    if args.full or args.doc:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(render(results))
        log(f"wrote {DOC}")
    return 0


def summary(r: Json) -> str:
    """The headline and the targets, as text for the terminal."""
    return "\n".join(render_headline(r) + render_targets(r))


if __name__ == "__main__":
    sys.exit(main())
