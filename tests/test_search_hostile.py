"""Hostile search queries: any string returns hits or a ConvstoreError, in bounded time.

The killer inputs run in a child process: before the query language was parsed by convstore,
tantivy's recursive parser overflowed its stack on them and the process died of SIGSEGV, which
inside pytest would have taken the whole run down instead of failing one test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convstore import ConvstoreError, QueryError, Store
from convstore.search import MAX_QUERY_CHARS, MAX_QUERY_CLAUSES, MAX_QUERY_DEPTH

from .conftest import run_python

_CHILD = """
import json, sys
from convstore import ConvstoreError, Store
store = Store(sys.argv[1])
try:
    hits = store.search(sys.argv[2])
    print(json.dumps({"hits": len(hits)}))
except ConvstoreError as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"""


@pytest.fixture
def filled(store: Store) -> Store:
    s = store.create_session("s")
    s.append("user", "hello world, a fjord cruise in Norway")
    s.append("assistant", "hello again: the ferry leaves at noon")
    store.search("hello")  # the cache exists before the child process opens the store
    return store


def search_in_child(store: Store, query: str) -> dict[str, object]:
    proc = run_python(_CHILD, str(store.path), query)
    assert proc.returncode == 0, (
        f"the search process died ({proc.returncode}): {proc.stderr[-500:]}"
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


class TestKillerQueries:
    @pytest.mark.parametrize(
        "query",
        [
            pytest.param("(" * 10_000, id="10000-open-parentheses"),
            pytest.param("(" * 5_000 + "hello" + ")" * 5_000, id="10000-nested-parentheses"),
            pytest.param("hello" + " NOT" * 20_000, id="hello-then-20000-NOT"),
            pytest.param("hello " + "-" * 20_000 + "x", id="20000-minus-signs"),
            pytest.param('"' * 20_000, id="20000-quotes"),
        ],
    )
    def test_a_huge_query_is_refused_and_the_process_lives(self, filled: Store, query: str) -> None:
        result = search_in_child(filled, query)
        assert result["error"] == "QueryError"
        assert f"the limit is {MAX_QUERY_CHARS:,}" in str(result["message"])

    def test_deep_nesting_under_the_length_limit_is_refused_with_its_reason(
        self, filled: Store
    ) -> None:
        query = "(" * 400 + "hello" + ")" * 400
        assert len(query) < MAX_QUERY_CHARS
        result = search_in_child(filled, query)
        assert result["error"] == "QueryError"
        assert f"nest more than {MAX_QUERY_DEPTH} deep" in str(result["message"])

    def test_a_long_chain_of_operators_under_the_limit_is_refused(self, filled: Store) -> None:
        with pytest.raises(QueryError, match="Syntax Error: NOT cannot follow NOT"):
            filled.search("hello" + " NOT" * 200)
        with pytest.raises(QueryError, match=f"more than {MAX_QUERY_CLAUSES} words"):
            filled.search(" OR ".join(["hi"] * 150))


class TestLimits:
    def test_nesting_up_to_the_limit_is_searched(self, filled: Store) -> None:
        query = "(" * MAX_QUERY_DEPTH + "hello" + ")" * MAX_QUERY_DEPTH
        assert len(filled.search(query)) == 2

    def test_as_many_words_as_the_limit_are_searched(self, filled: Store) -> None:
        query = " OR ".join(["hello"] + ["zzz"] * (MAX_QUERY_CLAUSES - 1))
        assert len(filled.search(query)) == 2

    @pytest.mark.parametrize(
        ("query", "reason"),
        [
            ('hello "world', "Syntax Error: the quote at character 7 is never closed"),
            ("hello)", "Syntax Error: the `)` at character 6 closes nothing"),
            ("()", "Syntax Error: the parentheses at character 1 hold nothing"),
            ("hello OR", "Syntax Error: OR at character 7 has nothing after it"),
            ("AND hello", "Syntax Error: AND at character 1 has nothing before it"),
            ("role: hello", "Syntax Error: role: at character 1 needs a value"),
            ('"a b"~x', "Syntax Error: ~ after a phrase needs a number"),
            ("!!! ...", "has no word to search for"),
            ("hello \ud800", "not valid Unicode"),
        ],
    )
    def test_a_malformed_query_names_what_is_wrong(
        self, filled: Store, query: str, reason: str
    ) -> None:
        with pytest.raises(QueryError, match=re.escape(reason)):
            filled.search(query)

    def test_a_filter_value_that_is_not_valid_unicode_is_refused(self, filled: Store) -> None:
        with pytest.raises(ConvstoreError, match="not valid Unicode"):
            filled.search("hello", session_id="\udcff")


_ALPHABET = st.one_of(
    st.sampled_from(list('()"*+-:~ \t\n\x00\x1b\\/^[]{}!?.,')),
    st.sampled_from(["AND", "OR", "NOT", "role:", "user:", "text:", "session:", "title:"]),
    st.sampled_from(["hello", "ferry", "日本", "café", "🎉", "Привет", "ّ", "\u0301"]),
    st.characters(codec="utf-8"),
    st.characters(),  # lone surrogates too
)


class TestFuzz:
    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(parts=st.lists(_ALPHABET, max_size=60), repeat=st.integers(1, 400))
    def test_any_query_returns_hits_or_a_convstore_error(
        self, filled: Store, parts: list[str], repeat: int
    ) -> None:
        query = "".join(parts) * (repeat if len("".join(parts)) * repeat < 3000 else 1)
        try:
            hits = filled.search(query)
        except ConvstoreError as e:
            assert str(e)
        else:
            assert isinstance(hits, list)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(query=st.text(max_size=200))
    def test_any_text_returns_hits_or_a_convstore_error(self, filled: Store, query: str) -> None:
        try:
            assert isinstance(filled.search(query), list)
        except ConvstoreError as e:
            assert str(e)


def test_the_cli_refuses_a_killer_query_in_one_line(filled: Store, tmp_path: Path) -> None:
    proc = run_python(
        "import sys; from convstore.cli import main; sys.argv[0] = 'convstore'; main()",
        "--store",
        str(filled.path),
        "search",
        "(" * 10_000,
    )
    assert proc.returncode == 1, proc.stderr[-500:]
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
