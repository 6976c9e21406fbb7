"""Ranked full-text search: the query language, every filter, snippets, and the current view."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from convstore import InvalidDate, InvalidInput, InvalidRole, QueryError, Store
from convstore.search import SearchHit

from .conftest import run_python

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def chats(store: Store) -> Store:
    a = store.create_session("trip", title="Trip planning", user_id="alice", org_id="acme")
    a.append("user", "We are planning a fjord cruise in Norway next summer", created_at=at(0))
    a.append("assistant", "A fjord cruise is lovely; book the ferry early.", created_at=at(1))
    a.append("user", "Which ferries run to Bergen?", created_at=at(2))
    b = store.create_session("code", title="Python help", user_id="bob", org_id="acme")
    b.append("user", "How do I read a JSON file in Python?", created_at=at(24))
    b.append("assistant", "Use json.load; Python's json module reads files.", created_at=at(25))
    b.append("user", "error: file not found when running the script", created_at=at(26))
    c = store.create_session("pets", user_id="carol", org_id="zoo")
    c.append("user", "My python snake is shedding its skin", created_at=at(48))
    c.append("tool", "lookup(python shedding) -> normal every few weeks", created_at=at(49))
    return store


def texts(hits: list[SearchHit]) -> list[str]:
    return [h.text for h in hits]


class TestQueryLanguage:
    def test_words_must_all_match(self, chats: Store) -> None:
        assert texts(chats.search("fjord summer")) == [
            "We are planning a fjord cruise in Norway next summer"
        ]

    def test_or_and_not(self, chats: Store) -> None:
        assert len(chats.search("fjord OR bergen")) == 3
        assert len(chats.search("python NOT snake")) == 3
        assert len(chats.search("python -snake -json")) == 1
        assert len(chats.search("(fjord OR bergen) AND ferry")) == 2

    def test_phrases_keep_the_words_together_and_in_order(self, chats: Store) -> None:
        assert len(chats.search('"fjord cruise"')) == 2
        assert chats.search('"cruise fjord"') == []

    def test_a_prefix_matches_every_word_it_starts(self, chats: Store) -> None:
        found = texts(chats.search("ferr*"))
        assert len(found) == 2  # ferry, ferries
        assert chats.search("pyth* shed*")[0].session_id == "pets"

    def test_english_words_match_their_other_forms(self, chats: Store) -> None:
        assert texts(chats.search("run")) == texts(chats.search("running"))
        assert len(chats.search("ferry")) == 2  # ferry and ferries
        assert len(chats.search("PYTHON")) == len(chats.search("python")) == 4

    def test_a_colon_after_a_word_is_punctuation(self, chats: Store) -> None:
        assert texts(chats.search("error: file")) == [
            "error: file not found when running the script"
        ]

    def test_fields_can_be_named_in_the_query(self, chats: Store) -> None:
        hits = chats.search("python role:tool")
        assert [h.role for h in hits] == ["tool"]

    def test_relevance_ranks_the_better_match_first(self, chats: Store) -> None:
        hits = chats.search("fjord cruise OR ferry")
        assert hits[0].text.startswith("A fjord cruise is lovely")
        scores = [h.score for h in hits if h.score is not None]
        assert len(scores) == len(hits) and scores == sorted(scores, reverse=True)

    @pytest.mark.parametrize(
        ("query", "reason"),
        [
            ("python AND", "Syntax Error"),
            ("(fjord", "Syntax Error"),
            ("NOT python", "it only excludes words"),
            ("  ", "the search query is empty"),
        ],
    )
    def test_a_query_the_parser_rejects_names_the_reason(
        self, chats: Store, query: str, reason: str
    ) -> None:
        with pytest.raises(QueryError, match=reason):
            chats.search(query)


class TestFilters:
    def test_by_session_user_org_and_role(self, chats: Store) -> None:
        assert {h.session_id for h in chats.search("python", session_id="code")} == {"code"}
        assert {h.user_id for h in chats.search("python", user_id="carol")} == {"carol"}
        assert {h.org_id for h in chats.search("python", org_id="acme")} == {"acme"}
        assert [h.role for h in chats.search("python", role="tool")] == ["tool"]
        assert chats.search("python", user_id="nobody") == []

    def test_by_date_range_half_open(self, chats: Store) -> None:
        assert len(chats.search("python", since=at(25))) == 3
        assert len(chats.search("python", until=at(25))) == 1
        assert len(chats.search("python", since=at(24), until=at(48))) == 2
        assert len(chats.search("python", since="2026-05-03")) == 2  # an ISO date
        assert chats.search("python", since="1h") == []  # everything is older than an hour

    def test_newest_first_and_limit(self, chats: Store) -> None:
        hits = chats.search("python", order="newest")
        times = [h.created_at for h in hits]
        assert times == sorted(times, reverse=True) and all(h.score is None for h in hits)
        assert len(chats.search("python", limit=2)) == 2

    @pytest.mark.parametrize(
        ("kwargs", "error", "reason"),
        [
            ({"role": "robot"}, InvalidRole, "role 'robot' is not one of"),
            ({"limit": 0}, InvalidInput, "limit must be an integer from 1"),
            ({"limit": True}, InvalidInput, "limit must be an integer"),
            ({"order": "oldest"}, InvalidInput, "order must be 'relevance' or 'newest'"),
            ({"since": "someday"}, InvalidDate, "cannot read 'someday' as a date"),
            ({"since": "2026-05-03", "until": "2026-05-01"}, InvalidDate, "swap them"),
            ({"user_id": 5}, InvalidInput, "user_id must be a string"),
        ],
    )
    def test_bad_arguments_are_refused(
        self, chats: Store, kwargs: dict[str, object], error: type[Exception], reason: str
    ) -> None:
        with pytest.raises(error, match=reason):
            chats.search("python", **kwargs)  # type: ignore[arg-type]


class TestDateWindows:
    """A window is matched by month and day terms plus the fast field at its partial ends:
    every shape must give exactly the messages a plain comparison of times gives."""

    TIMES = (
        datetime(2026, 3, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2026, 4, 1, tzinfo=timezone.utc),
        datetime(2026, 4, 15, 8, 30, tzinfo=timezone.utc),
        datetime(2026, 4, 30, 23, 0, tzinfo=timezone.utc),
        datetime(2026, 5, 1, tzinfo=timezone.utc),
        datetime(2026, 5, 2, 6, 0, tzinfo=timezone.utc),
        datetime(2026, 5, 2, 18, 0, tzinfo=timezone.utc),
        datetime(2026, 6, 30, 12, 0, tzinfo=timezone.utc),
        datetime(2027, 1, 1, tzinfo=timezone.utc),
        datetime(2099, 1, 1, tzinfo=timezone.utc),  # dated in the future: imports do that
    )

    @pytest.fixture
    def dated(self, store: Store) -> Store:
        s = store.create_session("dated")
        s.extend(
            [
                {"role": "user", "content": f"tick {i}", "created_at": t}
                for i, t in enumerate(self.TIMES)
            ]
        )
        return store

    @pytest.mark.parametrize(
        ("since", "until"),
        [
            (datetime(2026, 4, 1, tzinfo=timezone.utc), datetime(2026, 5, 1, tzinfo=timezone.utc)),
            (datetime(2026, 4, 1, tzinfo=timezone.utc), datetime(2026, 7, 1, tzinfo=timezone.utc)),
            (
                datetime(2026, 4, 15, 8, 30, tzinfo=timezone.utc),
                datetime(2026, 5, 2, 18, 0, tzinfo=timezone.utc),
            ),
            (
                datetime(2026, 5, 2, 6, 0, tzinfo=timezone.utc),
                datetime(2026, 5, 2, 6, 0, 0, 1, tzinfo=timezone.utc),
            ),
            (
                datetime(2026, 3, 31, 12, tzinfo=timezone.utc),
                datetime(2026, 4, 15, 9, tzinfo=timezone.utc),
            ),
            (datetime(2026, 4, 30, tzinfo=timezone.utc), datetime(2026, 5, 3, tzinfo=timezone.utc)),
            (datetime(2026, 5, 2, 7, tzinfo=timezone.utc), None),
            (None, datetime(2026, 4, 15, 8, 30, tzinfo=timezone.utc)),
            (datetime(1990, 1, 1, tzinfo=timezone.utc), datetime(2030, 1, 1, tzinfo=timezone.utc)),
        ],
    )
    def test_a_window_finds_exactly_the_messages_inside_it(
        self, dated: Store, since: datetime | None, until: datetime | None
    ) -> None:
        want = {
            f"tick {i}"
            for i, t in enumerate(self.TIMES)
            if (since is None or t >= since) and (until is None or t < until)
        }
        got = dated.search("tick", since=since, until=until, limit=100)
        assert {h.text for h in got} == want

    def test_a_window_does_not_change_the_scores_of_what_it_lets_through(
        self, chats: Store
    ) -> None:
        everything = {h.message_id: h.score for h in chats.search("python")}
        window = chats.search("python", since=at(20), until=at(48.5))
        assert window and all(h.score == everything[h.message_id] for h in window)


class TestHits:
    def test_a_hit_carries_its_message_and_session(self, chats: Store) -> None:
        (hit,) = chats.search("bergen")
        msg = chats.session("trip").messages()[2]
        assert (hit.session_id, hit.message_id, hit.role) == ("trip", msg.id, "user")
        assert hit.created_at == at(2) and hit.created_at.tzinfo is not None
        assert (hit.title, hit.user_id, hit.org_id) == ("Trip planning", "alice", "acme")
        assert hit.text == "Which ferries run to Bergen?"
        assert list(hit.to_dict())[:6] == [
            "session_id",
            "message_id",
            "role",
            "created_at",
            "score",
            "snippet",
        ]
        assert hit.to_dict()["created_at"] == "2026-05-01T14:00:00.000000Z"

    def test_snippets_mark_the_matched_words(self, chats: Store) -> None:
        (hit,) = chats.search("norway")
        assert "«Norway»" in hit.snippet
        stemmed = chats.search("cruises", session_id="trip", role="assistant")[0]
        assert "«cruise»" in stemmed.snippet
        prefixed = chats.search("berg*")[0]
        assert "«Bergen»" in prefixed.snippet

    def test_a_long_message_is_cut_around_the_match(self, store: Store) -> None:
        s = store.create_session("long")
        s.append("user", "filler " * 300 + "the needle is here " + "filler " * 300)
        (hit,) = store.search("needle")
        assert "«needle»" in hit.snippet and len(hit.snippet) < 300
        assert len(hit.text) > 4000


class TestCurrentView:
    def test_own_appends_are_found_without_a_refresh(self, chats: Store) -> None:
        chats.session("pets").append("user", "the quokka smiled")
        assert texts(chats.search("quokka")) == ["the quokka smiled"]

    def test_edits_deletes_and_dropped_sessions_are_reflected(self, chats: Store) -> None:
        trip = chats.session("trip")
        first, second, _ = trip.messages()
        trip.edit(first.id, "We are planning a canal trip in Venice")
        trip.delete_message(second.id)
        chats.delete_session("code")
        chats.refresh()
        assert chats.search("fjord") == []
        assert texts(chats.search("venice")) == ["We are planning a canal trip in Venice"]
        assert {h.session_id for h in chats.search("python")} == {"pets"}

    def test_a_change_of_title_or_user_reaches_the_hits(self, chats: Store) -> None:
        chats.session("pets").update(title="Snakes")
        chats.refresh()
        assert {h.title for h in chats.search("python", session_id="pets")} == {"Snakes"}

    def test_another_process_append_is_found_after_refresh(self, chats: Store) -> None:
        chats.search("python")  # the catalog exists and this process holds a snapshot
        done = run_python(
            "import sys\nfrom convstore import Store\n"
            "with Store(sys.argv[1]) as s:\n"
            "    s.session('pets').append('user', 'a wombat walked in')\n",
            str(chats.path),
        )
        assert done.returncode == 0, done.stderr
        chats.refresh()
        assert texts(chats.search("wombat")) == ["a wombat walked in"]
