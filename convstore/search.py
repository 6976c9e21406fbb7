"""The full-text index: tantivy (BM25), shared under ``<store>/.cache/index/<generation>``.

One document per message of the current view: its text (tokenised ``en_stem``: lower-cased,
split on non-alphanumerics, English Snowball stems), its id and session (stored), the session's
user and org and the message role (exact terms, for filters), and its time (a fast field, for date
ranges and newest-first order). The text itself is *not* stored in the index: it lives once, in
the catalog, which search reads for the few hits it returns. Storing it twice would cost 0.9x the
size of the segments on top of everything else (measured: docs/QUERY.md).

Any number of processes search the index at once. Only the refresher (which holds the store's
refresh lock) opens a writer, for the length of one refresh: tantivy allows one writer at a time,
across processes, and its lock is released when the writer is done.

Query language (docs/QUERY.md): words are ANDed; ``"a phrase"``, ``OR``, ``AND``, ``NOT`` or
``-word``, ``+word``, parentheses, ``prefix*``, and ``role:``, ``user:``, ``org:``, ``session:``
fields. A colon after any other word is read as punctuation (chat text is full of them).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import tantivy

from .catalog import CacheInvalid, Row
from .errors import QueryError
from .ids import to_us

SCHEMA_FIELDS = (
    "text",
    "id",
    "session",
    "user",
    "org",
    "role",
    "title",
    "month",
    "day",
    "created_at",
)
QUERY_FIELDS = frozenset({"text", "role", "session", "user", "org"})
# Marks around the matched words of a snippet: plain characters, not HTML and not ANSI colours,
# so a snippet is the message's own text (nothing escaped) that any caller can restyle: the CLI
# shows the marked words in bold, a web page would escape the text and use <mark>.
HIGHLIGHT_START = "\u00ab"  # «
HIGHLIGHT_END = "\u00bb"  # »
SNIPPET_CHARS = 200


def build_schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("text", stored=False, tokenizer_name="en_stem", index_option="position")
    # Small stored fields give a hit everything but its text without asking the catalog
    # (a session's title is copied into its documents, like its user and org).
    for name in ("id", "session", "user", "org", "role", "title"):
        sb.add_text_field(name, stored=True, tokenizer_name="raw", index_option="basic")
    # The UTC month and day of a message as terms: a date filter is mostly whole days and
    # months, and intersecting a posting list costs a fifth of a fast-field range over the
    # same documents (measured at a million messages: 0.6 ms against 3.1 for one month).
    for name in ("month", "day"):
        sb.add_text_field(name, stored=False, tokenizer_name="raw", index_option="basic")
    # A fast field only (no terms): it orders hits by time and cuts the partial days at the
    # ends of a window; indexing it too would cost 18 bytes per message for nothing.
    sb.add_integer_field("created_at", stored=False, indexed=False, fast=True)
    return sb.build()


@dataclass(frozen=True)
class SearchHit:
    """One message that matched a search."""

    session_id: str
    message_id: str
    created_at: datetime
    role: str
    score: float | None  # BM25 relevance; None when ordered by time
    snippet: str  # the best passage, matched words between « and »
    text: str  # the message's whole text
    title: str | None = None  # of the session
    user_id: str | None = None
    org_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        from .ids import format_us, to_us

        return {
            "session_id": self.session_id,
            "message_id": self.message_id,
            "role": self.role,
            "created_at": format_us(to_us(self.created_at)),
            "score": self.score,
            "snippet": self.snippet,
            "text": self.text,
            "title": self.title,
            "user_id": self.user_id,
            "org_id": self.org_id,
        }


class IndexInvalid(CacheInvalid):
    """The search index cannot be used; the catalog may still be fine."""


def _is_panic(e: BaseException) -> bool:
    # The Rust side of tantivy reports a panic (e.g. on a damaged file) as pyo3's
    # PanicException, which derives from BaseException, not Exception.
    return type(e).__name__ == "PanicException"


class SearchIndex:
    """One tantivy index directory, opened for searching; writers are made per refresh."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        try:
            if create:
                if path.exists():
                    shutil.rmtree(path)
                path.mkdir(mode=0o700)  # in the index folder, made 0700 by query.py
                self.index = tantivy.Index(build_schema(), str(path), reuse=False)
            else:
                if not (path / "meta.json").is_file():
                    raise IndexInvalid(f"search index {path} is missing")
                self.index = tantivy.Index.open(str(path))
                fields = [f["name"] for f in self._meta().get("schema", [])]
                if fields != list(SCHEMA_FIELDS):
                    raise IndexInvalid(f"search index {path} has fields {fields}")
            self.index.config_reader("manual")
            self.searcher = self.index.searcher()
        except CacheInvalid:
            raise
        except BaseException as e:
            if isinstance(e, Exception) or _is_panic(e):
                raise IndexInvalid(f"search index {path} cannot be opened: {e}") from None
            raise
        self.schema = self.index.schema

    def _meta(self) -> dict[str, Any]:
        try:
            body = json.loads((self.path / "meta.json").read_bytes())
        except (OSError, ValueError) as e:
            raise IndexInvalid(f"search index {self.path} has no readable meta.json: {e}") from None
        if not isinstance(body, dict):
            raise IndexInvalid(f"search index {self.path} has a malformed meta.json")
        return body

    def opstamp(self) -> int:
        """The operation stamp of the last commit on disk (tantivy's own counter)."""
        value = self._meta().get("opstamp", 0)
        return int(value) if isinstance(value, int) else 0

    def reload(self) -> None:
        try:
            self.index.reload()
            self.searcher = self.index.searcher()
        except BaseException as e:
            if isinstance(e, Exception) or _is_panic(e):
                raise IndexInvalid(f"search index {self.path} cannot be read: {e}") from None
            raise

    # -- writing ------------------------------------------------------------------------------

    def apply(
        self,
        add: Iterable[tuple[Row, tuple[Any, ...]]],
        delete: Iterable[str] = (),
        delete_sessions: Iterable[str] = (),
        *,
        heap: int = 32_000_000,
        threads: int = 1,
    ) -> int:
        """(Re)index messages and delete others in one commit; returns the commit's opstamp.

        Deleting an id before adding it makes the operation idempotent: a refresh that is
        repeated after a crash (its catalog part was never published) leaves one document.
        """
        writer = self.index.writer(heap, threads)
        try:
            for sid in delete_sessions:
                writer.delete_documents_by_term("session", sid)
            for mid in delete:
                writer.delete_documents_by_term("id", mid)
            for row, fields in add:
                writer.delete_documents_by_term("id", row["id"])
                writer.add_document(document(row, fields[3]))
            opstamp = int(writer.commit())
            # Merges run in writer threads; waiting for them releases tantivy's writer lock
            # for the next refresher and keeps the segment count bounded.
            writer.wait_merging_threads()
        except BaseException:
            with contextlib.suppress(Exception):  # the error being handled is the one to report
                writer.rollback()
            raise
        return opstamp

    def bulk(self, heap: int = 256_000_000) -> tantivy.IndexWriter:
        """A writer for a cold build (all cores)."""
        return self.index.writer(heap, 0)

    # -- searching ----------------------------------------------------------------------------

    def parse(self, text: str) -> tuple[tantivy.Query, list[str]]:
        """The query for ``text`` and the prefixes it holds (for highlighting)."""
        if not isinstance(text, str) or not text.strip():
            raise QueryError("the search query is empty; give at least one word")
        rewritten, prefixes = rewrite(text)
        try:
            query = self.index.parse_query(
                rewritten, ["text"], conjunction_by_default=True, allow_regexes=True
            )
        except ValueError as e:
            raise QueryError(f"cannot parse search query {text!r}: {_reason(e)}") from None
        return query, prefixes

    def highlighter(self, query: tantivy.Query, prefixes: list[str]) -> tantivy.SnippetGenerator:
        """A snippet generator that also marks the words a ``prefix*`` matched."""
        extra = []
        for prefix in prefixes:
            for term, _ in self.searcher.terms_with_prefix("text", prefix, limit=64):
                extra.append(tantivy.Query.term_query(self.schema, "text", term))
        if extra:
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Should, query)] + [(tantivy.Occur.Should, q) for q in extra]
            )
        gen = tantivy.SnippetGenerator.create(self.searcher, query, self.schema, "text")
        gen.set_max_num_chars(SNIPPET_CHARS)
        return gen

    def filters(
        self,
        *,
        session_id: str | None,
        user_id: str | None,
        org_id: str | None,
        role: str | None,
        since_us: int | None,
        until_us: int | None,
    ) -> list[tantivy.Query]:
        out = []
        for name, value in (
            ("session", session_id),
            ("user", user_id),
            ("org", org_id),
            ("role", role),
        ):
            if value is not None:
                out.append(tantivy.Query.term_query(self.schema, name, value))
        if since_us is not None or until_us is not None:
            out.append(self.window(since_us, until_us))
        return out

    def window(self, since_us: int | None, until_us: int | None) -> tantivy.Query:
        """Documents created in ``[since_us, until_us)``: whole months and days of the window
        as terms, the partial days at its ends cut by the fast field."""
        schema = self.schema

        def cut(lo: int | None, hi: int | None) -> tantivy.Query:
            return tantivy.Query.range_query(
                schema,
                "created_at",
                tantivy.FieldType.Integer,
                lo,
                None if hi is None else hi - 1,
            )

        if since_us is not None and until_us is not None and until_us <= since_us:
            return tantivy.Query.empty_query()
        tail, end = None, until_us
        if since_us is not None and until_us is None:
            # "Since 7d": buckets up to the end of tomorrow (UTC), and the fast field for
            # anything dated later, which costs nothing when no document is (tantivy checks
            # the column's bounds first).
            horizon = (max(time.time_ns() // 1000, since_us) // _DAY_US + 2) * _DAY_US
            tail, end = cut(horizon, None), horizon
        if since_us is None or end is None or end - since_us > _MAX_BUCKETED_US:
            # Open below (or a window of a century): a fast-field range, a scan of the column.
            return cut(since_us, until_us)
        months, days, edges = buckets(since_us, end)
        parts: list[tuple[tantivy.Occur, tantivy.Query]] = []
        if months:
            parts.append((_SHOULD, tantivy.Query.term_set_query(schema, "month", months)))
        if days:
            parts.append((_SHOULD, tantivy.Query.term_set_query(schema, "day", days)))
        for day in edges:
            day_query = tantivy.Query.term_query(schema, "day", day)
            parts.append(
                (
                    _SHOULD,
                    tantivy.Query.boolean_query([(_MUST, day_query), (_MUST, cut(since_us, end))]),
                )
            )
        if tail is not None:
            parts.append((_SHOULD, tail))
        # A filter must not move the BM25 scores of what it lets through (a term's score
        # differs between a month and a day term): every part scores zero.
        return tantivy.Query.const_score_query(tantivy.Query.boolean_query(parts), 0.0)

    def top(
        self, query: tantivy.Query, filters: list[tantivy.Query], limit: int, newest: bool
    ) -> list[Found]:
        """The best ``limit`` documents, with their stored fields."""
        if filters:
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, query)] + [(tantivy.Occur.Must, f) for f in filters]
            )
        searcher = self.searcher
        if newest:
            result = searcher.search(
                query, limit, count=False, order_by_field="created_at", order=tantivy.Order.Desc
            )
        else:
            result = searcher.search(query, limit, count=False)
        hits = result.hits
        if not hits:
            return []
        times = searcher.fast_field_values("created_at", [a for _, a in hits])
        out = []
        for (key, address), created in zip(hits, times, strict=True):
            doc = searcher.doc(address)
            out.append(
                Found(
                    score=None if newest else float(key),
                    message_id=str(doc.get_first("id")),
                    session_id=str(doc.get_first("session")),
                    role=str(doc.get_first("role")),
                    created_us=int(created or 0),
                    user_id=doc.get_first("user"),
                    org_id=doc.get_first("org"),
                    title=doc.get_first("title"),
                )
            )
        return out


@dataclass(frozen=True)
class Found:
    """A document the index returned, before its text is read from the catalog."""

    score: float | None
    message_id: str
    session_id: str
    role: str
    created_us: int
    user_id: str | None
    org_id: str | None
    title: str | None


_DAY_US = 86_400_000_000
_MUST = tantivy.Occur.Must
_SHOULD = tantivy.Occur.Should
# Past this a window is matched by the fast field alone (terms for every month of a century
# would cost more than the scan they save).
_MAX_BUCKETED_US = 100 * 366 * _DAY_US


@functools.lru_cache(maxsize=4096)
def day_terms(day_number: int) -> tuple[str, str]:
    """("YYYY-MM", "YYYY-MM-DD") of a UTC day, counted in days since 1970-01-01."""
    d = _EPOCH_DAY + timedelta(days=day_number)
    return f"{d.year:04d}-{d.month:02d}", f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


_EPOCH_DAY = date(1970, 1, 1)


def buckets(since_us: int, until_us: int) -> tuple[list[str], list[str], list[str]]:
    """Split ``[since_us, until_us)`` into whole UTC months, whole UTC days outside them, and
    the days only partly inside it (whose documents the fast field must cut)."""
    if until_us <= since_us:
        return [], [], []
    first, last = since_us // _DAY_US, (until_us - 1) // _DAY_US
    edges = []
    if since_us % _DAY_US:
        edges.append(first)
        first += 1
    if until_us % _DAY_US and last >= first:
        edges.append(last)
        last -= 1
    months: list[str] = []
    days: list[str] = []
    n = first
    while n <= last:
        d = _EPOCH_DAY + timedelta(days=n)
        next_month = (d.replace(day=1) + timedelta(days=32)).replace(day=1)
        month_last = (next_month - _EPOCH_DAY).days - 1
        if d.day == 1 and month_last <= last:
            months.append(day_terms(n)[0])
            n = month_last + 1
        else:
            days.append(day_terms(n)[1])
            n += 1
    return months, days, [day_terms(e)[1] for e in dict.fromkeys(edges)]


def document(row: Row, title: str | None) -> tantivy.Document:
    created = row["created_at"]
    return document_from(
        row["id"],
        row["session_id"],
        row["role"],
        row.get("user_id"),
        row.get("org_id"),
        title,
        created if isinstance(created, int) else to_us(created),
        row["text"],
    )


def document_from(
    mid: str,
    sid: str,
    role: str,
    user: str | None,
    org: str | None,
    title: str | None,
    created_us: int,
    text: str,
) -> tantivy.Document:
    doc = tantivy.Document()
    doc.add_text("text", text)
    doc.add_text("id", mid)
    doc.add_text("session", sid)
    doc.add_text("role", role)
    if user is not None:
        doc.add_text("user", user)
    if org is not None:
        doc.add_text("org", org)
    if title is not None:
        doc.add_text("title", title)
    month, day = day_terms(created_us // _DAY_US)
    doc.add_text("month", month)
    doc.add_text("day", day)
    doc.add_integer("created_at", created_us)
    return doc


# -- the query language -------------------------------------------------------------------------

_PREFIX = re.compile(r"(?<![\w/:.])(?:text:)?([^\W_][\w]*)\*")
_FIELD = re.compile(r"(?<![\w/])([A-Za-z_][\w-]*):")


def rewrite(text: str) -> tuple[str, list[str]]:
    """Turn our query language into tantivy's, outside double-quoted phrases.

    ``word*`` becomes a regular expression over the index's terms (tantivy's parser has no
    single-word prefix), and ``word:`` becomes ``word`` unless it names a query field.
    """
    prefixes: list[str] = []
    pieces = text.split('"')
    for i in range(0, len(pieces), 2):  # even pieces are outside quotes
        piece = pieces[i]

        def prefix(m: re.Match[str]) -> str:
            word = m.group(1).lower()
            prefixes.append(word)
            return f"text:/{re.escape(word)}.*/"

        def field(m: re.Match[str]) -> str:
            return m.group(0) if m.group(1) in QUERY_FIELDS else m.group(1) + " "

        piece = _FIELD.sub(field, piece)
        pieces[i] = _PREFIX.sub(prefix, piece)
    return '"'.join(pieces), prefixes


def _reason(e: Exception) -> str:
    msg = str(e).strip()
    if "Only excluding terms" in msg:
        return "it only excludes words; add a word to match, e.g. `chat NOT python`"
    if "Syntax Error" in msg:
        return f'{msg}. Use words, "quoted phrases", AND / OR / NOT, parentheses and prefix*'
    return msg


_WORD = re.compile(r"\w+")


def make_snippet(gen: tantivy.SnippetGenerator, text: str, words: list[str]) -> str:
    """The best passage of ``text``, matched words between « and »."""
    snip = gen.snippet_from_doc(_text_doc(text))
    fragment = snip.fragment()
    ranges = sorted((r.start, r.end) for r in snip.highlighted())
    if not ranges:
        return _fallback_snippet(text, words)
    out, pos = [], 0
    for start, end in ranges:
        if start < pos:
            continue
        out.append(fragment[pos:start])
        out.append(HIGHLIGHT_START + fragment[start:end] + HIGHLIGHT_END)
        pos = end
    out.append(fragment[pos:])
    return "".join(out)


def _text_doc(text: str) -> tantivy.Document:
    doc = tantivy.Document()
    doc.add_text("text", text)
    return doc


def _fallback_snippet(text: str, words: list[str]) -> str:
    """A passage around the first query word found, for hits tantivy marked nothing in (a
    match through a field filter only, or a word the stemmer changed beyond recognition)."""
    lowered = text.lower()
    found = [i for w in words if w and (i := lowered.find(w.lower())) >= 0]
    start = max(0, min(found, default=0) - SNIPPET_CHARS // 3)
    passage = text[start : start + SNIPPET_CHARS]
    words = [w for w in words if w]
    if not words:
        return passage
    pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)
    return pattern.sub(lambda m: HIGHLIGHT_START + m.group(0) + HIGHLIGHT_END, passage)


def query_words(text: str) -> list[str]:
    """The plain words of a query (operators and field names left out), for fallbacks."""
    skip = {"AND", "OR", "NOT"}
    out = []
    for w in _WORD.findall(_FIELD.sub(" ", text)):
        if w not in skip:
            out.append(w)
    return out
