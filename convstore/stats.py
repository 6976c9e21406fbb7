"""Statistics over the catalog: counts, session lengths, activity by day and hour, terms, tokens.

Everything is computed by DuckDB from the catalog's views at the time of the call (about 60 ms
over a million messages on two cores); the columns that make it cheap are precomputed when rows
are ingested: ``day`` and ``hour`` (UTC), ``model``, ``tokens_in`` and ``tokens_out``.

Window semantics (``since``/``until``, half-open): message figures count the messages created
in the window; ``sessions`` counts the sessions with a message in it (all sessions when there is
no window, empty ones included); session lengths count a session's messages in the window.
``storage`` is never windowed: bytes on disk do not belong to a time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import tantivy

from .catalog import Catalog
from .ids import format_us, from_us

TERMS_SAMPLE = 400
TOP_TERMS = 20

# English function words and chat filler, left out of top terms (a word list reads best as text).
STOPWORDS = frozenset(
    """
a about above after again against all also am an and any are aren't as at be because been
before being below between both but by can can't cannot could couldn't did didn't do does doesn't
doing don't down during each even ever few for from further get gets got had hadn't has hasn't
have haven't having he he'd he'll he's her here here's hers herself him himself his how how's i
i'd i'll i'm i've if in into is isn't it it's its itself just let's like make may me might more
most much must mustn't my myself need no nor not now of off on once one only or other ought our
ours ourselves out over own really same shan't she she'd she'll she's should shouldn't so some
such than that that's the their theirs them themselves then there there's these they they'd
they'll they're they've this those through thus to too under until up upon us use used using
very want was wasn't way we we'd we'll we're we've well were weren't what what's when when's
where where's whether which while who who's whom why why's will with won't would wouldn't yes yet
you you'd you'll you're you've your yours yourself yourselves
""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class SessionLengths:
    """Messages per session: mean and percentiles (continuous), over sessions with messages."""

    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: int = 0


@dataclass(frozen=True)
class TokenCounts:
    input: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output


@dataclass(frozen=True)
class Storage:
    """Bytes of JSON records the segments hold, against the bytes they take on disk."""

    raw_bytes: int = 0
    disk_bytes: int = 0
    files: int = 0

    @property
    def ratio(self) -> float:
        """Compression ratio (raw / on disk)."""
        return self.raw_bytes / self.disk_bytes if self.disk_bytes else 0.0


@dataclass(frozen=True)
class Stats:
    """What ``store.stats()`` returns; ``to_dict()`` gives JSON-ready values."""

    sessions: int = 0
    messages: int = 0
    messages_by_role: dict[str, int] = field(default_factory=dict)
    session_length: SessionLengths = field(default_factory=SessionLengths)
    messages_per_day: dict[date, int] = field(default_factory=dict)  # UTC days, in order
    messages_by_hour: list[int] = field(default_factory=lambda: [0] * 24)  # UTC, 0-23
    top_terms: list[tuple[str, int]] = field(default_factory=list)
    terms_sampled: int = 0  # messages the top terms were counted in
    models: dict[str, int] = field(default_factory=dict)  # assistant messages per model
    tokens: TokenCounts = field(default_factory=TokenCounts)
    tokens_by_model: dict[str, TokenCounts] = field(default_factory=dict)
    storage: Storage = field(default_factory=Storage)
    first_message_at: datetime | None = None
    last_message_at: datetime | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def busiest_hours(self) -> list[int]:
        """Hours of the day (UTC) from the most to the least active, idle hours left out."""
        order = sorted(range(24), key=lambda h: (-self.messages_by_hour[h], h))
        return [h for h in order if self.messages_by_hour[h]]

    def to_dict(self) -> dict[str, Any]:
        def ts(value: datetime | None) -> str | None:
            from .ids import to_us

            return None if value is None else format_us(to_us(value))

        return {
            "sessions": self.sessions,
            "messages": self.messages,
            "messages_by_role": dict(self.messages_by_role),
            "session_length": {
                "mean": self.session_length.mean,
                "p50": self.session_length.p50,
                "p90": self.session_length.p90,
                "p99": self.session_length.p99,
                "max": self.session_length.max,
            },
            "messages_per_day": {d.isoformat(): n for d, n in self.messages_per_day.items()},
            "messages_by_hour": list(self.messages_by_hour),
            "busiest_hours": self.busiest_hours,
            "top_terms": [[t, n] for t, n in self.top_terms],
            "terms_sampled": self.terms_sampled,
            "models": dict(self.models),
            "tokens": {
                "input": self.tokens.input,
                "output": self.tokens.output,
                "total": self.tokens.total,
            },
            "tokens_by_model": {
                m: {"input": t.input, "output": t.output, "total": t.total}
                for m, t in self.tokens_by_model.items()
            },
            "storage": {
                "raw_bytes": self.storage.raw_bytes,
                "disk_bytes": self.storage.disk_bytes,
                "files": self.storage.files,
                "ratio": round(self.storage.ratio, 3),
            },
            "first_message_at": ts(self.first_message_at),
            "last_message_at": ts(self.last_message_at),
            "since": ts(self.since),
            "until": ts(self.until),
        }


def compute(
    catalog: Catalog,
    *,
    user_id: str | None,
    org_id: str | None,
    since_us: int | None,
    until_us: int | None,
) -> Stats:
    who: list[str] = []
    when: list[str] = []
    params: list[Any] = []
    for column, value in (("user_id", user_id), ("org_id", org_id)):
        if value is not None:
            params.append(value)
            who.append(f"{column} = ${len(params)}")
    if since_us is not None:
        params.append(since_us)
        when.append(f"created_at >= make_timestamptz(${len(params)}::BIGINT)")
    if until_us is not None:
        params.append(until_us)
        when.append(f"created_at < make_timestamptz(${len(params)}::BIGINT)")
    # The filters go inside both branches of the view (base and delta), where DuckDB pushes
    # them into the scans.
    msgs = catalog.live_rows("messages", " AND ".join(who + when))

    def run(sql: str) -> list[tuple[Any, ...]]:
        return catalog.run(sql, params)

    total, t_in, t_out, lo, hi = run(
        "SELECT count(*), sum(tokens_in), sum(tokens_out), epoch_us(min(created_at)), "
        f"epoch_us(max(created_at)) FROM ({msgs})"
    )[0]
    by_role = dict(run(f"SELECT role, count(*) FROM ({msgs}) GROUP BY role"))
    per_day = dict(run(f"SELECT day, count(*) FROM ({msgs}) GROUP BY day ORDER BY day"))
    by_hour = [0] * 24
    for hour, n in run(f"SELECT hour, count(*) FROM ({msgs}) GROUP BY hour"):
        by_hour[int(hour)] = n
    models: dict[str, int] = {}
    tokens_by_model: dict[str, TokenCounts] = {}
    for model, n, m_in, m_out in run(
        f"SELECT model, count(*), sum(tokens_in), sum(tokens_out) FROM ({msgs}) "
        "WHERE model IS NOT NULL GROUP BY model"
    ):
        models[model] = n
        tokens_by_model[model] = TokenCounts(int(m_in or 0), int(m_out or 0))
    active, mean, quantiles, longest = run(
        "SELECT count(*), avg(n), quantile_cont(n, [0.5, 0.9, 0.99]), max(n) FROM "
        f"(SELECT session_id, count(*) AS n FROM ({msgs}) GROUP BY session_id)"
    )[0]
    session_length = SessionLengths()
    if active:
        q = [float(x) for x in quantiles]
        session_length = SessionLengths(float(mean), q[0], q[1], q[2], int(longest))
    if when:
        sessions = int(active)
    else:
        sessions = int(
            run(f"SELECT count(*) FROM ({catalog.live_rows('sessions', ' AND '.join(who))})")[0][0]
        )
    if who:
        sess = catalog.live_rows("sessions", " AND ".join(who))
        storage_sql = (
            "SELECT sum(f.raw_bytes), sum(f.size), count(*) FROM files f "
            f"WHERE f.session_id IN (SELECT id FROM ({sess}))"
        )
    else:
        storage_sql = "SELECT sum(raw_bytes), sum(size), count(*) FROM files"
    raw, disk, files = catalog.run(storage_sql, params[: len(who)])[0]
    terms, sampled = top_terms(catalog, " AND ".join(who + when), params, int(total))
    return Stats(
        sessions=sessions,
        messages=int(total),
        messages_by_role=dict(sorted(by_role.items(), key=lambda kv: (-kv[1], kv[0]))),
        session_length=session_length,
        messages_per_day=per_day,
        messages_by_hour=by_hour,
        top_terms=terms,
        terms_sampled=sampled,
        models=dict(sorted(models.items(), key=lambda kv: (-kv[1], kv[0]))),
        tokens=TokenCounts(int(t_in or 0), int(t_out or 0)),
        tokens_by_model=tokens_by_model,
        storage=Storage(int(raw or 0), int(disk or 0), int(files or 0)),
        first_message_at=None if lo is None else from_us(lo),
        last_message_at=None if hi is None else from_us(hi),
        since=None if since_us is None else from_us(since_us),
        until=None if until_us is None else from_us(until_us),
    )


_ANALYZER = (
    tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    .filter(tantivy.Filter.remove_long(30))
    .filter(tantivy.Filter.lowercase())
    .build()
)
# The simple tokenizer splits "don't" into "don" and "t": leave out those halves too.
_SKIP = STOPWORDS | {w.split("'")[0] for w in STOPWORDS if "'" in w}


def top_terms(
    catalog: Catalog, where: str, params: list[Any], total: int
) -> tuple[list[tuple[str, int]], int]:
    """The most frequent words in a sample of about TERMS_SAMPLE matching messages.

    Counting every word of a million messages takes seconds. The sample is a hash of each row's
    key, so it is spread over the whole window (no run of one session, no parity with roles),
    costs a scan of one integer column, and gives the same answer every time. Words are split
    and lower-cased by tantivy's tokenizer; stopwords, numbers and words under three letters
    are left out.
    """
    if total == 0:
        return [], 0
    step = max(1, total // TERMS_SAMPLE)
    and_where = f"{where} AND " if where else ""
    rows = catalog.live_rows(
        "messages",
        f"{and_where}hash(_rk) % {step} = 0",
        f"{and_where}hash(id) % {step} = 0",  # delta rows have no _rk
    )
    texts = [r[0] for r in catalog.run(f"SELECT text FROM ({rows})", params)]
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_ANALYZER.analyze(text))
    ranked = []
    for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(word) >= 3 and word not in _SKIP and not word.isdigit():
            ranked.append((word, n))
            if len(ranked) == TOP_TERMS:
                break
    return ranked, len(texts)
