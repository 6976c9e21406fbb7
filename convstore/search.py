"""The full-text index: tantivy (BM25), shared under ``<store>/.cache/index/<generation>``.

One document per message of the current view: its text (tokenised by ``text_analyzer``: words of
letters and digits in any script, lower-cased, accents folded, English Snowball stems; each CJK
character and each emoji a token of its own, so that a run of them is found as a phrase inside any
longer run: CJK writes no spaces between words), its id and session (stored), the session's user
and org and the message role (exact terms, for filters), and its time (a fast field, for date
ranges and newest-first order). The text itself is *not* stored in the index: it lives once, in the
catalog, which search reads for the few hits it returns. Storing it twice would cost 0.9x the size
of the segments on top of everything else (measured: docs/QUERY.md).

Any number of processes search the index at once. Only the refresher (which holds the store's
refresh lock) opens a writer, for the length of one refresh: tantivy allows one writer at a time,
across processes, and its lock is released when the writer is done.

Query language (docs/QUERY.md): words are ANDed; ``"a phrase"``, ``OR``, ``AND``, ``NOT`` or
``-word``, ``+word``, parentheses, ``prefix*``, and ``role:``, ``user:``, ``org:``, ``session:``
fields. A colon after any other word is read as punctuation (chat text is full of them). The
query is parsed here, into a structure bounded in length, words and nesting, and the tantivy
query is built from it: tantivy's own parser recurses on its input, and a query of a few
thousand parentheses or ``NOT``s overflowed its stack and killed the process.
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
    "text_v2",
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
# The field of a message's text and its analyzer carry the analyzer's version: an index built
# with another analyzer is found stale when it is opened (by its fields, as convstore before
# version 2 of the analyzer checks them too, or by the tokenizer meta.json records for a field),
# and rebuilt, instead of answering with the wrong tokens or failing on an unknown tokenizer.
TEXT_FIELD = "text_v2"
TEXT_TOKENIZER = "convstore_text_v2"
SCHEMA_TOKENIZERS = {
    TEXT_FIELD: TEXT_TOKENIZER,
    **{name: "raw" for name in ("id", "session", "user", "org", "role", "title", "month", "day")},
}
QUERY_FIELDS = frozenset({"text", "role", "session", "user", "org"})
# Marks around the matched words of a snippet: plain characters, not HTML and not ANSI colours,
# so a snippet is the message's own text (nothing escaped) that any caller can restyle: the CLI
# shows the marked words in bold, a web page would escape the text and use <mark>.
HIGHLIGHT_START = "\u00ab"  # «
HIGHLIGHT_END = "\u00bb"  # »
SNIPPET_CHARS = 200


def build_schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field(
        TEXT_FIELD, stored=False, tokenizer_name=TEXT_TOKENIZER, index_option="position"
    )
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
                fields = _schema_tokenizers(self._meta())
                if list(fields) != list(SCHEMA_FIELDS):
                    raise IndexInvalid(f"search index {path} has fields {list(fields)}")
                stale = {k: v for k, v in fields.items() if SCHEMA_TOKENIZERS.get(k, v) != v}
                if stale:
                    raise IndexInvalid(
                        f"search index {path} was built by another version (tokenizers {stale})"
                    )
            # tantivy keeps custom analyzers in memory only: every Index object needs them.
            self.index.register_tokenizer(TEXT_TOKENIZER, text_analyzer())
            self.index.config_reader("manual")
            self.searcher = self.index.searcher()
        except CacheInvalid:
            raise
        except BaseException as e:
            if isinstance(e, Exception) or _is_panic(e):
                raise IndexInvalid(f"search index {path} cannot be opened: {e}") from None
            raise
        self.schema = self.index.schema
        # Queries are analyzed here as the index analyzed the text (its searches run one at a
        # time: the query layer holds its lock around them).
        self.analyzer = text_analyzer()
        self.plain = text_analyzer(stem=False)

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

    def parse(self, text: str) -> ParsedQuery:
        """The tantivy query for ``text`` (raises QueryError with what is wrong)."""
        return Parser(text, self.schema, self.analyzer, self.plain).parse()

    def highlighter(self, parsed: ParsedQuery) -> tantivy.SnippetGenerator:
        """A snippet generator that also marks the words a ``prefix*`` matched."""
        query = parsed.query
        extra = []
        for prefix in parsed.prefixes:
            for term, _ in self.searcher.terms_with_prefix(TEXT_FIELD, prefix, limit=64):
                extra.append(tantivy.Query.term_query(self.schema, TEXT_FIELD, term))
        if extra:
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Should, query)] + [(tantivy.Occur.Should, q) for q in extra]
            )
        gen = tantivy.SnippetGenerator.create(self.searcher, query, self.schema, TEXT_FIELD)
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
                _check_unicode(value, f"the {name} filter")
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
_MUST_NOT = tantivy.Occur.MustNot
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
    doc.add_text(TEXT_FIELD, text)
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


# -- text analysis ------------------------------------------------------------------------------

# Scripts written without spaces between words: each character is a token, so that a word of
# them in a query, searched as the phrase of its characters, matches inside any longer run
# (日本 finds 日本語). The prolonged sound mark and the iteration mark are of the Common script
# but belong to the words around them.
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Bopomofo}\x{30FC}\x{3005}"
# A token is one CJK character, one emoji, or a word of letters, marks and digits in any other
# script (a word starts with a letter or digit: a stray combining mark or variation selector is
# not a token). Everything else (spaces, punctuation, symbols, joiners) separates tokens.
TOKEN_PATTERN = (
    "[" + _CJK + "]"
    r"|\p{Extended_Pictographic}"
    r"|[[\p{Alphabetic}\p{N}]--[" + _CJK + r"]][[\p{Alphabetic}\p{M}\p{N}]--[" + _CJK + "]]*"
)
# The same scripts for Python's re (which has no script classes), to tell CJK marks apart.
_CJK_RUN = re.compile(
    "[\u1100-\u11ff\u3005\u3040-\u30ff\u3100-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff]+"
)
_MAX_TOKEN_CHARS = 40  # longer tokens (hashes, base64) are not indexed, as with en_stem


def text_analyzer(*, stem: bool = True) -> tantivy.TextAnalyzer:
    """The analyzer of the text field: lower-cased, accents folded (``cafe`` finds ``café``),
    English stems; without ``stem``, the form a ``prefix*`` is matched against."""
    builder = (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(TOKEN_PATTERN))
        .filter(tantivy.Filter.remove_long(_MAX_TOKEN_CHARS))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
    )
    if stem:
        builder = builder.filter(tantivy.Filter.stemmer("english"))
    return builder.build()


def _schema_tokenizers(meta: dict[str, Any]) -> dict[str, str | None]:
    """Each field of an index's meta.json and the tokenizer it was indexed with."""
    out: dict[str, str | None] = {}
    for field in meta.get("schema", []):
        indexing = (field.get("options") or {}).get("indexing") or {}
        out[str(field.get("name"))] = (
            indexing.get("tokenizer") if field.get("type") == "text" else None
        )
    return out


# -- the query language -------------------------------------------------------------------------

# Bounds on a query: with them, parsing and the query tantivy runs are small whatever the input.
MAX_QUERY_CHARS = 1_000
MAX_QUERY_CLAUSES = 64  # words, phrases and field values
MAX_QUERY_DEPTH = 8  # nested parentheses
MAX_SLOP = 100
_OPERATORS = frozenset({"AND", "OR", "NOT"})
_SIGNS = frozenset({"NOT", "-", "+"})
_DIGITS = frozenset("0123456789")
_WORD = re.compile(r"\w+")
_HOW = 'Use words, "quoted phrases", AND / OR / NOT, parentheses and prefix*'


@dataclass(frozen=True)
class ParsedQuery:
    """A search query, built for tantivy."""

    query: tantivy.Query
    prefixes: list[str]  # of single-word ``prefix*``: the words they match are highlighted too
    words: list[str]  # the query's words, to find a passage when tantivy marks nothing


@dataclass(frozen=True)
class _Tok:
    kind: str  # ( ) word phrase field AND OR NOT + -
    at: int  # 1-based character position, for error messages
    text: str = ""
    slop: int = 0
    field: str = ""
    quoted: bool = False


def _check_unicode(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise QueryError(
            f"{what} is not valid Unicode: it holds a lone surrogate at character {e.start + 1};"
            " pass text decoded with errors='replace'"
        ) from None


class Parser:
    """Our query language into a tantivy query, built term by term (never by tantivy's parser).

    Grammar: ``or := and ("OR" and)*``, ``and := unary (["AND"] unary)*``,
    ``unary := ["NOT" | "-" | "+"] primary``, ``primary := "(" or ")" | "phrase"[~N] | field:value
    | word[*]``. OR binds loosest: ``a b OR c`` is ``(a AND b) OR c``. In an OR, a ``+`` operand
    must match and a ``-`` one must not, as in Lucene.
    """

    def __init__(
        self,
        text: str,
        schema: tantivy.Schema,
        analyzer: tantivy.TextAnalyzer,
        plain: tantivy.TextAnalyzer,
    ) -> None:
        self.text = text
        self.schema = schema
        self.analyzer = analyzer
        self.plain = plain
        self.toks: list[_Tok] = []
        self.pos = 0
        self.clauses = 0
        self.prefixes: list[str] = []
        self.words: list[str] = []

    def parse(self) -> ParsedQuery:
        text = self.text
        if not isinstance(text, str) or not text.strip():
            raise QueryError("the search query is empty; give at least one word")
        if len(text) > MAX_QUERY_CHARS:
            raise QueryError(
                f"the search query is {len(text):,} characters long; the limit is"
                f" {MAX_QUERY_CHARS:,}: search for a few telling words instead"
            )
        _check_unicode(text, "the search query")
        self.toks = self._lex()
        try:
            query = self._or(0)
        except ValueError as e:  # tantivy refused a query it was built: say so, never crash
            raise QueryError(f"cannot search for {self._short()}: {e}") from None
        if self.pos < len(self.toks):  # only a ")" stops the outermost level early
            raise self._syntax(f"the `)` at character {self.toks[self.pos].at} closes nothing")
        if query is None:
            raise QueryError(
                f"the search query {self._short()} has no word to search for (punctuation and"
                " symbols alone match nothing); give at least one word"
            )
        return ParsedQuery(query, self.prefixes, self.words)

    # -- errors -----------------------------------------------------------------------------------

    def _short(self) -> str:
        text = self.text
        return repr(text if len(text) <= 80 else text[:77] + "...")

    def _syntax(self, what: str) -> QueryError:
        return QueryError(
            f"cannot parse search query {self._short()}: Syntax Error: {what}. {_HOW}"
        )

    # -- lexing -----------------------------------------------------------------------------------

    def _lex(self) -> list[_Tok]:
        text, out, i, n = self.text, [], 0, len(self.text)
        while i < n:
            c = text[i]
            if c.isspace():
                i += 1
            elif c in "()":
                out.append(_Tok(c, i + 1))
                i += 1
            elif c == '"':
                tok, i = self._quoted(i)
                out.append(tok)
            else:
                j = i
                while j < n and not text[j].isspace() and text[j] not in '()"':
                    j += 1
                word = text[i:j]
                name, colon, value = word.partition(":")
                if word in _OPERATORS:
                    out.append(_Tok(word, i + 1))
                elif word[0] in "+-" and (len(word) > 1 or (j < n and text[j] in '("')):
                    out.append(_Tok(word[0], i + 1))
                    j = i + 1  # what follows the sign is read again, as a word of its own
                elif colon and name in QUERY_FIELDS:
                    if value:
                        out.append(_Tok("field", i + 1, value, field=name))
                    elif j < n and text[j] == '"':
                        tok, j = self._quoted(j)
                        out.append(_Tok("field", i + 1, tok.text, tok.slop, name, quoted=True))
                    else:
                        raise self._syntax(
                            f"{name}: at character {i + 1} needs a value, e.g. role:user"
                        )
                else:
                    out.append(_Tok("word", i + 1, word))
                i = j
        return out

    def _quoted(self, i: int) -> tuple[_Tok, int]:
        """The phrase whose opening quote is at ``i``, and the index after it."""
        text = self.text
        end = text.find('"', i + 1)
        if end < 0:
            raise self._syntax(f"the quote at character {i + 1} is never closed; close it")
        k, slop = end + 1, 0
        if k < len(text) and text[k] == "~":
            m = k + 1
            while m < len(text) and text[m] in _DIGITS:
                m += 1
            if m == k + 1:
                raise self._syntax('~ after a phrase needs a number of words, e.g. "a b"~2')
            if m - k > 4 or int(text[k + 1 : m]) > MAX_SLOP:
                raise self._syntax(f"a phrase's ~ allows at most {MAX_SLOP} words between")
            slop, k = int(text[k + 1 : m]), m
        return _Tok("phrase", i + 1, text[i + 1 : end], slop), k

    # -- parsing ----------------------------------------------------------------------------------

    def _peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def _or(self, depth: int) -> tantivy.Query | None:
        groups = [self._and(depth)]
        while (tok := self._peek()) is not None and tok.kind == "OR":
            if not groups[-1]:
                raise self._syntax(f"OR at character {tok.at} has nothing before it")
            self.pos += 1
            after = self._peek()
            if after is None or after.kind in (")", "OR", "AND"):
                raise self._syntax(f"OR at character {tok.at} has nothing after it")
            groups.append(self._and(depth))
        if len(groups) == 1:
            return self._conjunction(groups[0])
        parts: list[tuple[tantivy.Occur, tantivy.Query]] = []
        for group in groups:
            if len(group) == 1 and group[0][0] is not None:
                sign, query = group[0]
                if query is not None:
                    parts.append((_MUST if sign == "+" else _MUST_NOT, query))
            elif (query := self._conjunction(group)) is not None:
                parts.append((_SHOULD, query))
        return self._combine(parts)

    def _and(self, depth: int) -> list[tuple[str | None, tantivy.Query | None]]:
        clauses: list[tuple[str | None, tantivy.Query | None]] = []
        while (tok := self._peek()) is not None and tok.kind not in (")", "OR"):
            self.pos += 1
            after = self._peek()
            if tok.kind == "AND":
                if not clauses:
                    raise self._syntax(f"AND at character {tok.at} has nothing before it")
                if after is None or after.kind in (")", "OR", "AND"):
                    raise self._syntax(f"AND at character {tok.at} has nothing after it")
                continue
            sign = None
            if tok.kind in _SIGNS:
                if after is None or after.kind in (")", "OR", "AND"):
                    raise self._syntax(f"{tok.kind} at character {tok.at} has nothing after it")
                if after.kind in _SIGNS:
                    raise self._syntax(
                        f"{after.kind} cannot follow {tok.kind} (character {after.at})"
                    )
                sign = "+" if tok.kind == "+" else "-"
                tok = after
                self.pos += 1
            clauses.append((sign, self._primary(tok, depth)))
        return clauses

    def _conjunction(
        self, clauses: list[tuple[str | None, tantivy.Query | None]]
    ) -> tantivy.Query | None:
        parts = [(_MUST_NOT if s == "-" else _MUST, q) for s, q in clauses if q is not None]
        return self._combine(parts)

    def _combine(self, parts: list[tuple[tantivy.Occur, tantivy.Query]]) -> tantivy.Query | None:
        if not any(occur != _MUST_NOT for occur, _ in parts):
            if parts:
                raise QueryError(
                    f"cannot parse search query {self._short()}: it only excludes words; add a"
                    " word to match, e.g. `chat NOT python`"
                )
            return None
        if len(parts) == 1:
            return parts[0][1]
        return tantivy.Query.boolean_query(parts)

    def _primary(self, tok: _Tok, depth: int) -> tantivy.Query | None:
        if tok.kind == "(":
            if depth >= MAX_QUERY_DEPTH:
                raise QueryError(
                    f"cannot parse search query {self._short()}: its parentheses nest more than"
                    f" {MAX_QUERY_DEPTH} deep; flatten the query"
                )
            after = self._peek()
            if after is not None and after.kind == ")":
                raise self._syntax(f"the parentheses at character {tok.at} hold nothing")
            query = self._or(depth + 1)
            close = self._peek()
            if close is None or close.kind != ")":
                raise self._syntax(f"the `(` at character {tok.at} is never closed")
            self.pos += 1
            return query
        if tok.kind == "phrase" or (tok.kind == "field" and tok.field == "text" and tok.quoted):
            return self._phrase(tok.text, tok.slop)
        if tok.kind == "word" or (tok.kind == "field" and tok.field == "text"):
            return self._word(tok.text)
        if tok.kind == "field":
            self._count()
            return tantivy.Query.term_query(self.schema, tok.field, tok.text)
        raise self._syntax(f"the `{tok.kind}` at character {tok.at} is out of place")

    # -- leaves -----------------------------------------------------------------------------------

    def _count(self) -> None:
        self.clauses += 1
        if self.clauses > MAX_QUERY_CLAUSES:
            raise QueryError(
                f"the search query {self._short()} has more than {MAX_QUERY_CLAUSES} words,"
                " phrases and field values; search for fewer, more telling words"
            )

    def _tokens(self, text: str) -> list[tuple[int, str]]:
        return [(t.position, t.text) for t in self.analyzer.pre_tokenize(text).tokens]

    def _word(self, word: str) -> tantivy.Query | None:
        """A word: a term, or the phrase of its tokens (``json.load``, ``日本``)."""
        base = word.rstrip("*")
        prefix = bool(base) and base != word
        tokens = self._tokens(base)
        if not tokens:
            return None
        self._count()
        self.words.append(base)
        schema = self.schema
        if prefix:
            # The prefix is matched unstemmed: ``ferr*`` must find ferry, whose stem is ferri.
            last = self.plain.analyze(base)[-1]
            if len(tokens) == 1:
                self.prefixes.append(last)
                return tantivy.Query.regex_query(schema, TEXT_FIELD, re.escape(last) + ".*")
            words = [*tokens[:-1], (tokens[-1][0], last)]
            return tantivy.Query.phrase_prefix_query(schema, TEXT_FIELD, words)  # type: ignore[arg-type]
        if len(tokens) == 1:
            return tantivy.Query.term_query(schema, TEXT_FIELD, tokens[0][1])
        return tantivy.Query.phrase_query(schema, TEXT_FIELD, tokens)  # type: ignore[arg-type]

    def _phrase(self, text: str, slop: int) -> tantivy.Query | None:
        tokens = self._tokens(text)
        if not tokens:
            return None
        self._count()
        self.words.extend(_WORD.findall(text))
        if len(tokens) == 1:
            return tantivy.Query.term_query(self.schema, TEXT_FIELD, tokens[0][1])
        return tantivy.Query.phrase_query(self.schema, TEXT_FIELD, tokens, slop)  # type: ignore[arg-type]


# -- snippets -----------------------------------------------------------------------------------


def make_snippet(gen: tantivy.SnippetGenerator, text: str, words: list[str]) -> str:
    """The best passage of ``text``, matched words between « and »."""
    # tantivy measures a fragment in bytes: a passage of CJK or Cyrillic would be a third or
    # half as many characters as one of English without this scaling.
    size = len(text.encode("utf-8"))
    gen.set_max_num_chars(SNIPPET_CHARS * size // max(len(text), 1))
    snip = gen.snippet_from_doc(_text_doc(text))
    # Highlighted ranges are byte offsets into the fragment, not string indices.
    fragment = snip.fragment().encode("utf-8")
    ranges: list[list[int]] = []
    for r in sorted((r.start, r.end) for r in snip.highlighted()):
        if ranges and r[0] <= ranges[-1][1]:  # overlapping or adjacent (CJK characters)
            ranges[-1][1] = max(ranges[-1][1], r[1])
        else:
            ranges.append([r[0], r[1]])
    # tantivy marks every term of a phrase wherever it occurs: for a CJK word, each of its
    # characters. Only runs that hold a whole CJK word of the query are marks worth showing.
    runs = _CJK_RUN.findall(" ".join(words))
    pieces = [(start, end, fragment[start:end].decode("utf-8", "replace")) for start, end in ranges]
    pieces = [p for p in pieces if not _CJK_RUN.fullmatch(p[2]) or any(run in p[2] for run in runs)]
    if not pieces:
        return _fallback_snippet(text, words)
    out, pos = [], 0
    for start, end, marked in pieces:
        out.append(fragment[pos:start].decode("utf-8", "replace"))
        out.append(HIGHLIGHT_START + marked + HIGHLIGHT_END)
        pos = end
    out.append(fragment[pos:].decode("utf-8", "replace"))
    return "".join(out)


def _text_doc(text: str) -> tantivy.Document:
    doc = tantivy.Document()
    doc.add_text(TEXT_FIELD, text)
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
