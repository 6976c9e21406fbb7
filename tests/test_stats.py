"""Statistics: every figure on a store whose answers are known, and every filter."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest

from convstore import InvalidDate, Store
from convstore.stats import Stats

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def known(store: Store) -> Store:
    """Three sessions: a (alice, 4 messages on 1 June), b (bob, 2 on 2 June), c (alice, org
    zoo, 1 on 3 June), and one empty session."""
    a = store.create_session("a", user_id="alice", org_id="acme")
    a.append("system", "You are a helpful assistant", created_at=at(0))
    a.append("user", "Tell me about penguins and penguins again", created_at=at(1))
    a.append(
        "assistant",
        "Penguins live in the southern hemisphere",
        metadata={"model": "gpt-4o", "tokens": {"input": 100, "output": 40}},
        created_at=at(1.5),
    )
    a.append("user", "More penguins please", created_at=at(2))
    b = store.create_session("b", user_id="bob", org_id="acme")
    b.append("user", "Glaciers are melting", created_at=at(24))
    b.append(
        "assistant",
        "Glaciers respond to temperature",
        metadata={"model": "claude", "usage": {"input_tokens": 30, "output_tokens": 12}},
        created_at=at(25),
    )
    c = store.create_session("c", user_id="alice", org_id="zoo")
    c.append("user", "Penguins at the zoo", created_at=at(48))
    store.create_session("empty", user_id="dave")
    return store


class TestFigures:
    def test_counts_by_role_and_sessions(self, known: Store) -> None:
        st = known.stats()
        assert isinstance(st, Stats)
        assert st.sessions == 4 and st.messages == 7
        assert st.messages_by_role == {"user": 4, "assistant": 2, "system": 1}

    def test_session_lengths(self, known: Store) -> None:
        lengths = known.stats().session_length
        assert lengths.mean == pytest.approx(7 / 3)
        assert lengths.p50 == 2.0 and lengths.max == 4
        assert lengths.p90 == pytest.approx(3.6) and lengths.p99 == pytest.approx(3.96)

    def test_activity_by_day_and_hour_in_utc(self, known: Store) -> None:
        st = known.stats()
        assert st.messages_per_day == {
            date(2026, 6, 1): 4,
            date(2026, 6, 2): 2,
            date(2026, 6, 3): 1,
        }
        assert sum(st.messages_by_hour) == 7
        assert st.messages_by_hour[8:11] == [3, 3, 1]  # 9:30 falls in hour 9
        assert st.busiest_hours == [8, 9, 10]  # a tie goes to the earlier hour

    def test_models_and_tokens_from_either_convention(self, known: Store) -> None:
        st = known.stats()
        assert st.models == {"claude": 1, "gpt-4o": 1}
        assert (st.tokens.input, st.tokens.output, st.tokens.total) == (130, 52, 182)
        assert st.tokens_by_model["claude"].total == 42

    def test_top_terms_leave_stopwords_out(self, known: Store) -> None:
        st = known.stats()
        terms = dict(st.top_terms)
        assert st.top_terms[0] == ("penguins", 5)
        assert terms["glaciers"] == 2
        assert not {"the", "and", "are", "about", "you", "me", "to"} & set(terms)
        assert st.terms_sampled == 7

    def test_storage_compares_record_bytes_with_bytes_on_disk(self, known: Store) -> None:
        storage = known.stats().storage
        files = sum(1 for _ in (known.path / "sessions").glob("*/*.zst"))
        on_disk = sum(p.stat().st_size for p in (known.path / "sessions").glob("*/*.zst"))
        assert storage.files == files and storage.disk_bytes == on_disk
        assert storage.raw_bytes > 0 and storage.ratio == storage.raw_bytes / on_disk

    def test_first_and_last_message(self, known: Store) -> None:
        st = known.stats()
        assert (st.first_message_at, st.last_message_at) == (at(0), at(48))

    def test_an_empty_store_has_zeros(self, store: Store) -> None:
        st = store.stats()
        assert (st.sessions, st.messages, st.top_terms, st.session_length.max) == (0, 0, [], 0)
        assert st.first_message_at is None

    def test_to_dict_is_json(self, known: Store) -> None:
        d = known.stats(since="2026-06-01").to_dict()
        again = json.loads(json.dumps(d))
        assert again["messages_per_day"] == {"2026-06-01": 4, "2026-06-02": 2, "2026-06-03": 1}
        assert again["top_terms"][0] == ["penguins", 5]
        assert again["since"] == "2026-06-01T00:00:00.000000Z" and again["until"] is None
        assert again["storage"]["files"] == 4


class TestFilters:
    def test_by_user_and_org(self, known: Store) -> None:
        alice = known.stats(user_id="alice")
        assert (alice.sessions, alice.messages) == (2, 5)
        acme_alice = known.stats(user_id="alice", org_id="acme")
        assert (acme_alice.sessions, acme_alice.messages) == (1, 4)
        assert known.stats(user_id="dave").sessions == 1  # an empty session still counts
        assert known.stats(user_id="nobody").messages == 0

    def test_storage_follows_the_user_filter(self, known: Store) -> None:
        assert known.stats(user_id="bob").storage.files == 1

    def test_a_window_counts_its_messages_and_active_sessions(self, known: Store) -> None:
        st = known.stats(since="2026-06-02", until="2026-06-02")  # all of 2 June
        assert (st.sessions, st.messages) == (1, 2)
        assert st.session_length.max == 2
        assert st.messages_per_day == {date(2026, 6, 2): 2}
        assert known.stats(since=at(1), until=at(2)).messages == 2  # half-open

    def test_a_bad_window_is_refused(self, known: Store) -> None:
        with pytest.raises(InvalidDate, match="swap them"):
            known.stats(since="2026-06-03", until="2026-06-01")
        with pytest.raises(InvalidDate, match="cannot read"):
            known.stats(until="tomorrowish")

    def test_deletions_change_the_figures(self, known: Store) -> None:
        known.delete_session("b")
        a = known.session("a")
        a.delete_message(a.messages()[0].id)
        st = known.stats()
        assert (st.sessions, st.messages) == (3, 4)
        assert "system" not in st.messages_by_role and st.models == {"gpt-4o": 1}
