"""A deterministic workload of realistic chat messages for the benchmarks.

``messages(n)`` yields ``n`` messages spread over many sessions and a year of timestamps
(2025-11-01 to 2026-11-01), in global time order and in order within each session. Same
``n``, ``seed`` and ``sessions`` give the same messages, byte for byte, on every run.

Shape of the text:

- user messages are short (20-400 characters), assistant messages longer (200-3000 characters,
  some with a fenced code block); the mean is about 700 bytes per message;
- words follow a Zipf-Mandelbrot law over a vocabulary of about 3,000 words, so a few words are
  in most messages and most words are rare; ``COMMON_WORD`` is in about a quarter of the
  messages, ``RARE_WORD`` in one message out of 10,000 (it is placed, not drawn);
- assistant messages carry ``{"model", "tokens": {"input", "output"}, "latency_ms"}``.

Why the text is cut from one long pre-drawn stream of words, read forward: drawing each word
separately costs about 35 s per million messages in pure Python, and cutting messages at random
offsets of a short pool would repeat text inside a compressor's window and flatter every
compression ratio. Read forward, the stream (about 4M words, ~28 MB of text) only repeats after
that much text, far beyond zstd's window.

Reproduce the statistics: ``python benchmarks/workload.py``.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "COMMON_WORD",
    "END",
    "RARE_WORD",
    "START",
    "WorkMessage",
    "date_window",
    "messages",
]

START = datetime(2025, 11, 1, tzinfo=timezone.utc)
END = datetime(2026, 11, 1, tzinfo=timezone.utc)

COMMON_WORD = "python"
"""A word in about a quarter of the messages (a Zipf rank chosen for that)."""

RARE_WORD = "zyzzyva"
"""A word in one message out of 10,000: never drawn from the vocabulary, only placed."""

RARE_EVERY = 10_000
"""One message in each block of this many carries RARE_WORD."""

MESSAGES_PER_SESSION = 50
"""Mean session length when ``sessions`` is not given."""

_STREAM_WORDS = 1 << 22
_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "claude-3-5-haiku", "llama-3.1-70b")
_MODEL_WEIGHTS = (35, 20, 25, 10, 10)
_AVG_WORD_BYTES = 5.36

# Ranked by how often they are drawn: function words first, then the subjects people chat about.
# COMMON_WORD is inserted at _COMMON_RANK.
_REAL_WORDS_TEXT = """
the to a and of you is in it that for this can with on be your i use if as not are or an
we will it's have by from at so do what how which but all one more when there they like
then here need also should would make get some just data file time about into out up only
other than its any example way each these code set using value first new could function may
want my list me run error now our because two add work see version where line check does
same case output model step call return user string number run name type result table query
key test help problem different change create class import config problem update python
text write read path default print system method return test look start example server dict
install package local object field option process simple best note sure good long used
without between most well right still try error issue below such both over after through
many very much those while since within around order source first last next back high low
script module library loop variable array index column row database sql select join where
group count sum average date month year week day hour minute second timezone utc format
json yaml csv parquet schema record message session history store folder disk memory cache
request response api token limit rate retry timeout network client service cloud deploy
docker container image build release branch commit merge git remote push pull repository
bash shell command terminal flag argument env linux mac windows install pip venv dependency
recipe cook oven bake minutes salt pepper garlic onion butter flour sugar egg milk cheese
pasta rice chicken beef fish soup sauce salad bread dough heat pan boil simmer taste fresh
travel flight train hotel ticket booking airport city country trip visit museum beach
mountain walk map route tour guide luggage passport visa budget cheap price cost euro dollar
money bank account loan interest rate tax income spend save invest fund stock bond market
portfolio risk return retirement pension inflation salary rent mortgage insurance payment
card credit debit transfer fee balance monthly annual growth percent profit loss
health sleep exercise run walk diet water coffee tea morning evening weekend holiday family
friend kid school class teacher student homework book read write essay story poem music
song movie game play team match score plan idea project goal task meeting email calendar
thanks please great sorry hello yes no okay maybe probably actually really quite exactly
"""
_REAL_WORDS = _REAL_WORDS_TEXT.split()

_SYLLABLES_TEXT = (
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo fu ga ge go gu ha he hi ho hu "
    "ja jo ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re "
    "ri ro ru sa se si so su ta te ti to tu va ve vi vo wa we wi xa xo ya yo za ze zo "
    "tra tre tri pro pla ple bri cla cre dra fla gra gre ster ton lin mar ver tor ric man"
)
_SYLLABLES = _SYLLABLES_TEXT.split()

# A few non-ASCII words so tokenisers and byte counts meet accents, CJK and emoji.
_UNICODE_WORDS = ("café", "naïve", "über", "façade", "東京", "数据", "😀", "🚀", "مرحبا", "שלום")

_CODE_TEMPLATES = (
    "```python\ndef {a}_{b}(items: list[str]) -> dict[str, int]:\n"
    "    counts: dict[str, int] = {{}}\n    for item in items:\n"
    "        counts[item] = counts.get(item, 0) + 1\n    return counts\n```",
    "```python\nimport json\n\nwith open('{a}.json') as f:\n    {b} = json.load(f)\n"
    "print(len({b}))\n```",
    "```sql\nSELECT {a}, count(*) AS n\nFROM {b}\nWHERE created_at >= '2026-01-01'\n"
    "GROUP BY {a}\nORDER BY n DESC\nLIMIT 20;\n```",
    "```bash\npython -m venv .venv && . .venv/bin/activate\npip install {a}\n{a} --{b} ./data\n```",
    "```python\nclass {A}:\n    def __init__(self, {b}: int) -> None:\n"
    "        self.{b} = {b}\n\n    def __repr__(self) -> str:\n"
    "        return f'{A}({{self.{b}}})'\n```",
    "```sql\nCREATE TABLE {a} (\n  id INTEGER PRIMARY KEY,\n  {b} TEXT NOT NULL,\n"
    "  created_at TIMESTAMP\n);\n```",
)


@dataclass(frozen=True)
class WorkMessage:
    """One message of the workload."""

    session_id: str
    role: str
    content: str
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


def date_window() -> tuple[datetime, datetime]:
    """A (since, until) pair covering one month inside the workload's year (May 2026)."""
    return (
        datetime(2026, 5, 1, tzinfo=timezone.utc),
        datetime(2026, 6, 1, tzinfo=timezone.utc),
    )


def _vocabulary(rng: random.Random) -> list[str]:
    """About 3,000 words in Zipf rank order, COMMON_WORD at a fixed rank, RARE_WORD absent."""
    real = list(dict.fromkeys(w for w in _REAL_WORDS if w != COMMON_WORD))
    synthetic: dict[str, None] = {}
    seen = set(real)
    while len(synthetic) < 2_600:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3, 3, 4))))
        if word not in seen and RARE_WORD not in word:
            synthetic[word] = None
            seen.add(word)
    words = real + list(synthetic)
    # Mixed into the tail so they are rare, as they are in English chat.
    for i, w in enumerate(_UNICODE_WORDS):
        words.insert(400 + 170 * i, w)
    words.insert(_COMMON_RANK, COMMON_WORD)
    assert all(RARE_WORD not in w for w in words)
    return words


# With the Zipf-Mandelbrot weights below, rank 45 puts COMMON_WORD in ~25% of the messages.
_COMMON_RANK = 45


@functools.lru_cache(maxsize=2)
def _stream(seed: int) -> tuple[str, ...]:
    """The pre-drawn word stream for ``seed``, with sentence punctuation baked in."""
    rng = random.Random(seed * 7919 + 1)
    vocab = _vocabulary(rng)
    cum = list(itertools.accumulate(1.0 / (r + 2.7) for r in range(len(vocab))))
    drawn = rng.choices(vocab, cum_weights=cum, k=_STREAM_WORDS)
    out: list[str] = []
    append = out.append
    until_stop = 0
    capital = True
    for word in drawn:
        if capital:
            word = word[:1].upper() + word[1:]
            capital = False
        if until_stop <= 0:
            until_stop = rng.randint(6, 22)
        until_stop -= 1
        if until_stop == 0:
            word += rng.choice((".", ".", ".", "?", "!")) if len(out) % 5 else ","
            capital = word[-1] != ","
        append(word)
    return tuple(out)


@dataclass
class _Session:
    sid: str
    remaining: int
    at: datetime
    role_index: int = 0
    has_system: bool = False


class _Text:
    """Cuts message bodies from the word stream, reading it forward."""

    def __init__(self, seed: int, rng: random.Random) -> None:
        self.words = _stream(seed)
        self.rng = rng
        self.pos = rng.randrange(len(self.words))

    def take(self, target_bytes: int) -> str:
        k = max(3, round(target_bytes / _AVG_WORD_BYTES))
        if self.pos + k > len(self.words):
            self.pos = self.rng.randrange(len(self.words) // 2)
        piece = self.words[self.pos : self.pos + k]
        self.pos += k
        return " ".join(piece)


def _session_lengths(n: int, sessions: int, rng: random.Random) -> list[int]:
    """Split n messages into `sessions` lengths >= 1, skewed like real chat (many short, a few
    long ones)."""
    raw = [rng.lognormvariate(0.0, 0.9) for _ in range(sessions)]
    total = sum(raw)
    lengths = [max(1, int(n * r / total)) for r in raw]
    diff = n - sum(lengths)
    i = 0
    while diff != 0:
        j = i % sessions
        if diff > 0:
            lengths[j] += 1
            diff -= 1
        elif lengths[j] > 1:
            lengths[j] -= 1
            diff += 1
        i += 1
    return lengths


def _session_start(rng: random.Random) -> datetime:
    """A start time in the year, busier on weekdays and in the working day (UTC)."""
    span_days = (END - START).days
    while True:
        day = rng.randrange(span_days - 3)
        hour = min(23, max(0, int(rng.gauss(14.0, 4.0))))
        weekday = (START + timedelta(days=day)).weekday()
        if weekday < 5 or rng.random() < 0.55:
            return START + timedelta(
                days=day, hours=hour, seconds=rng.randrange(3600), microseconds=rng.randrange(10**6)
            )


def _clip(x: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, x)))


def messages(n: int, *, seed: int = 7, sessions: int | None = None) -> Iterator[WorkMessage]:
    """Yield ``n`` messages over ``sessions`` sessions (default ``n // 50``, at least 1) in
    global time order. Deterministic in (n, seed, sessions)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return
    n_sessions = max(1, n // MESSAGES_PER_SESSION) if sessions is None else sessions
    if n_sessions < 1:
        raise ValueError(f"sessions must be >= 1, got {sessions}")
    n_sessions = min(n_sessions, n)
    rng = random.Random(seed)
    text = _Text(seed, rng)
    width = max(4, len(str(n_sessions)))
    lengths = _session_lengths(n, n_sessions, rng)
    heap: list[tuple[datetime, int, _Session]] = []
    for i, length in enumerate(lengths):
        s = _Session(f"s-{i:0{width}d}", length, _session_start(rng))
        s.has_system = rng.random() < 0.1 and length > 2
        heap.append((s.at, i, s))
    heapq.heapify(heap)
    # One message per block of RARE_EVERY carries RARE_WORD, at a random place in the block.
    rare_at = {b * RARE_EVERY + rng.randrange(RARE_EVERY) for b in range(math.ceil(n / RARE_EVERY))}
    weights = list(itertools.accumulate(_MODEL_WEIGHTS))
    emitted = 0
    while heap:
        at, i, s = heapq.heappop(heap)
        if s.has_system and s.role_index == 0:
            role = "system"
            body = "You are a helpful assistant. " + text.take(_clip(rng.gauss(160, 60), 40, 400))
        elif (s.role_index - s.has_system) % 2 == 0:
            role = "user"
            body = text.take(_clip(rng.lognormvariate(4.75, 0.7), 20, 400))
            while len(body) < 20:
                body += " " + text.take(20)
            if len(body) > 400:
                body = body[:400].rsplit(" ", 1)[0]
        else:
            role = "assistant"
            body = text.take(_clip(rng.lognormvariate(7.0, 0.5), 200, 3000))
            while len(body) < 200:
                body += " " + text.take(200)
            if rng.random() < 0.18:
                a, b = text.take(1).split()[0].lower(), text.take(1).split()[0].lower()
                a = "".join(c for c in a if c.isalnum()) or "items"
                b = "".join(c for c in b if c.isalnum()) or "value"
                snippet = rng.choice(_CODE_TEMPLATES).format(a=a, b=b, A=a.capitalize())
                body = f"{body}\n\n{snippet}"
            if len(body) > 3000:
                body = body[:3000].rsplit(" ", 1)[0]
        if emitted in rare_at:
            words = body.split(" ")
            words.insert(rng.randrange(len(words) + 1), RARE_WORD)
            body = " ".join(words)
        metadata: dict[str, Any] = {}
        if role == "assistant":
            model = _MODELS[bisect.bisect(weights, rng.random() * weights[-1])]
            output_tokens = max(1, len(body) // 4)
            metadata = {
                "model": model,
                "tokens": {"input": rng.randint(200, 8000), "output": output_tokens},
                "latency_ms": int(300 + output_tokens * rng.uniform(8, 25)),
            }
        yield WorkMessage(s.sid, role, body, at, metadata)
        emitted += 1
        s.role_index += 1
        s.remaining -= 1
        if s.remaining > 0:
            # Replies come seconds to minutes apart; a user sometimes returns hours later.
            gap = rng.expovariate(1 / 45.0) if role == "user" else rng.expovariate(1 / 150.0)
            if role == "assistant" and rng.random() < 0.05:
                gap += rng.uniform(3600, 36 * 3600)
            nxt = at + timedelta(seconds=2 + gap, microseconds=rng.randrange(10**6))
            s.at = min(nxt, END - timedelta(microseconds=s.remaining))
            heapq.heappush(heap, (s.at, i, s))


def _stats(n: int) -> None:
    import time

    t0 = time.perf_counter()
    msgs = list(messages(n))
    elapsed = time.perf_counter() - t0
    sizes = sorted(len(m.content.encode()) for m in msgs)
    by_role: dict[str, list[int]] = {}
    for m in msgs:
        by_role.setdefault(m.role, []).append(len(m.content.encode()))
    common = sum(1 for m in msgs if COMMON_WORD in m.content.lower().split())
    rare = sum(1 for m in msgs if RARE_WORD in m.content)
    sessions = {m.session_id for m in msgs}
    print(f"messages          {len(msgs):,} in {len(sessions):,} sessions ({elapsed:.2f} s)")
    print(f"bytes/message     mean {sum(sizes) / len(sizes):.0f}, median {sizes[len(sizes) // 2]}")
    for role, b in sorted(by_role.items()):
        print(f"  {role:<15} {len(b):>7,} msgs, mean {sum(b) / len(b):.0f} B, max {max(b)} B")
    print(f"first / last      {msgs[0].created_at.isoformat()} / {msgs[-1].created_at.isoformat()}")
    print(f"COMMON_WORD {COMMON_WORD!r:<10} in {common / len(msgs):.1%} of messages")
    print(f"RARE_WORD   {RARE_WORD!r:<10} in {rare} messages ({rare / len(msgs):.3%})")
    since, until = date_window()
    in_window = sum(1 for m in msgs if since <= m.created_at < until)
    print(f"date_window()     {since.date()}..{until.date()}: {in_window:,} messages")


if __name__ == "__main__":
    _stats(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
