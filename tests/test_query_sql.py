"""SQL over the catalog: its tables hold the current view, results come in several forms, and
anything but a read-only statement is refused without harming the cache."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from convstore import QueryError, Store
from convstore.catalog import PUBLIC_TABLES, TABLES
from convstore.query import QueryResult

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def filled(store: Store) -> Store:
    a = store.create_session("a", title="Alpha", user_id="alice", org_id="acme", created_at=T0)
    a.append("user", "hello there", created_at=T0)
    a.append(
        "assistant",
        "hi, how can I help?",
        metadata={"model": "gpt-4o", "tokens": {"input": 10, "output": 20}},
        created_at=at(1),
    )
    b = store.create_session("b", user_id="bob", org_id="acme", created_at=T0)
    b.append("user", "a question", created_at=at(2))
    b.append(
        "assistant",
        "an answer",
        metadata={"model": "claude", "usage": {"input_tokens": 7, "output_tokens": 3}},
        created_at=at(3),
    )
    b.append(
        "assistant",
        "another answer",
        metadata={"model": "gpt-4o", "usage": {"prompt_tokens": 5, "completion_tokens": 6}},
        created_at=at(4),
    )
    return store


class TestTheTablesHoldTheCurrentView:
    def test_every_documented_table_and_column_is_there(self, filled: Store) -> None:
        for name in PUBLIC_TABLES:
            spec = TABLES[name]
            got = filled.sql(f"SELECT * FROM {name} LIMIT 0").columns
            assert got == [c for c in spec.names if c not in spec.hidden]

    def test_messages_carry_their_session_fields_and_usage(self, filled: Store) -> None:
        rows = filled.sql(
            "SELECT session_id, role, text, user_id, org_id, model, tokens_in, tokens_out, "
            "day, hour FROM messages ORDER BY created_at"
        ).rows
        assert [r[:3] for r in rows] == [
            ("a", "user", "hello there"),
            ("a", "assistant", "hi, how can I help?"),
            ("b", "user", "a question"),
            ("b", "assistant", "an answer"),
            ("b", "assistant", "another answer"),
        ]
        assert [r[3:5] for r in rows] == [("alice", "acme")] * 2 + [("bob", "acme")] * 3
        assert [r[5:8] for r in rows] == [
            (None, None, None),
            ("gpt-4o", 10, 20),
            (None, None, None),
            ("claude", 7, 3),
            ("gpt-4o", 5, 6),
        ]
        assert {(r[8].isoformat(), r[9]) for r in rows} == {("2026-03-02", 9)}

    def test_an_edit_shows_its_new_text_and_when_it_was_made(self, filled: Store) -> None:
        s = filled.session("a")
        first = s.messages()[0]
        s.edit(first.id, "hello again")
        row = filled.sql("SELECT text, edited_at FROM messages WHERE id = ?", [first.id]).rows[0]
        assert row[0] == "hello again" and row[1] is not None

    def test_deleted_messages_and_sessions_are_gone(self, filled: Store) -> None:
        s = filled.session("b")
        s.delete_message(s.messages()[0].id)
        filled.delete_session("a")
        assert filled.sql("SELECT id FROM sessions").rows == [("b",)]
        assert filled.sql("SELECT count(*) FROM messages").scalar() == 2
        assert filled.sql("SELECT count(*) FROM messages WHERE session_id = 'a'").scalar() == 0

    def test_a_branch_holds_its_own_messages_and_names_its_parent(self, filled: Store) -> None:
        parent = filled.session("a")
        point = parent.messages()[0]
        branch = filled.branch("a", point.id, branch_id="a2")
        branch.append("user", "a different turn")
        row = filled.sql(
            "SELECT parent_session, parent_message, message_count FROM sessions WHERE id = 'a2'"
        ).rows[0]
        assert row == ("a", point.id, 1)
        assert filled.sql("SELECT text FROM messages WHERE session_id = 'a2'").rows == [
            ("a different turn",)
        ]

    def test_the_same_records_in_two_files_count_once(self, filled: Store, tmp_path: Path) -> None:
        folder = filled.path / "sessions" / "a"
        hot = next(folder.glob("hot.*.jsonl.zst"))
        writer = hot.name.split(".")[1]
        # What a git pull of another clone holding the same records leaves: a second segment.
        shutil.copy(hot, folder / hot.name.replace(writer, "0123456789ab"))
        filled.refresh()
        assert filled.sql("SELECT count(*) FROM messages WHERE session_id = 'a'").scalar() == 2

    def test_states_and_checkpoints_are_listed(self, filled: Store) -> None:
        s = filled.session("a")
        s.save_state({"plan": [1, 2], "step": 3})
        s.put_checkpoint("cp1", {"x": 1}, metadata={"source": "loop"})
        s.put_checkpoint("cp2", {"x": 2}, parent_id="cp1", namespace="sub")
        assert filled.sql("SELECT session_id, keys FROM states").rows == [("a", ["plan", "step"])]
        rows = filled.sql(
            "SELECT namespace, checkpoint_id, parent_id, metadata->>'source' FROM checkpoints "
            "ORDER BY checkpoint_id"
        ).rows
        assert rows == [("", "cp1", None, "loop"), ("sub", "cp2", "cp1", None)]
        s.delete_checkpoints(namespace="sub")
        assert filled.sql("SELECT checkpoint_id FROM checkpoints").rows == [("cp1",)]

    def test_files_say_what_was_read_from_where(self, filled: Store) -> None:
        rows = filled.sql(
            "SELECT session_id, kind, size = ingested, records FROM files ORDER BY session_id"
        ).rows
        assert rows == [("a", "hot", True, 3), ("b", "hot", True, 4)]
        sess = filled.sql("SELECT raw_bytes > 0, disk_bytes > 0 FROM sessions").rows
        assert set(sess) == {(True, True)}


class TestResults:
    def test_rows_columns_dicts_and_arrow_agree(self, filled: Store) -> None:
        r = filled.sql("SELECT role, count(*) AS n FROM messages GROUP BY role ORDER BY role")
        assert isinstance(r, QueryResult)
        assert r.columns == ["role", "n"]
        assert r.rows == [("assistant", 3), ("user", 2)] == list(r)
        assert len(r) == 2 and r[1] == ("user", 2)
        assert r.to_dicts() == [{"role": "assistant", "n": 3}, {"role": "user", "n": 2}]
        table = r.to_arrow()
        assert isinstance(table, pa.Table) and table.column("n").to_pylist() == [3, 2]

    def test_a_dataframe_comes_from_pandas(self, filled: Store) -> None:
        if importlib.util.find_spec("pandas") is None:
            pytest.skip("pandas is not installed (it is optional)")
        df = filled.sql("SELECT id FROM sessions ORDER BY id").to_pandas()
        assert list(df["id"]) == ["a", "b"]

    def test_times_come_back_as_aware_utc_datetimes(self, filled: Store) -> None:
        value = filled.sql("SELECT min(created_at) FROM messages").scalar()
        assert value == T0 and value.utcoffset().total_seconds() == 0

    def test_parameters_by_position_and_by_name(self, filled: Store) -> None:
        q = "SELECT count(*) FROM messages WHERE user_id = ? AND role = ?"
        assert filled.sql(q, ["bob", "assistant"]).scalar() == 2
        assert filled.sql(q, ("alice", "user")).scalar() == 1
        named = "SELECT count(*) FROM messages WHERE user_id = $who"
        assert filled.sql(named, {"who": "bob"}).scalar() == 3

    def test_describe_show_summarize_and_explain_are_read_only_and_allowed(
        self, filled: Store
    ) -> None:
        assert "text" in [r[0] for r in filled.sql("DESCRIBE messages")]
        assert {r[0] for r in filled.sql("SHOW TABLES")} >= set(PUBLIC_TABLES)
        assert len(filled.sql("SUMMARIZE sessions")) > 0
        assert len(filled.sql("EXPLAIN SELECT * FROM messages")) > 0
        assert filled.sql("WITH x AS (SELECT 1 AS v) SELECT v FROM x").scalar() == 1


class TestRefusals:
    @pytest.mark.parametrize(
        ("sql", "reason"),
        [
            ("SELEC 1", r"SQL error: Parser Error: syntax error"),
            ("SELECT * FROM nowhere", r"SQL error: Catalog Error: Table with name nowhere"),
            ("SELECT nosuch FROM messages", r"SQL error: Binder Error: .*nosuch"),
            ("DROP TABLE messages", r"DROP statements are refused: the catalog is a read-only"),
            ("DELETE FROM messages", r"DELETE statements are refused"),
            ("INSERT INTO messages (id) VALUES ('x')", r"INSERT statements are refused"),
            ("CREATE TABLE t (a INT)", r"CREATE statements are refused"),
            ("UPDATE sessions SET title = 'x'", r"UPDATE statements are refused"),
            ("COPY messages TO '/tmp/x.csv'", r"COPY statements are refused"),
            ("ATTACH ':memory:' AS m", r"ATTACH statements are refused"),
            ("SET threads = 1", r"SET statements are refused"),
            ("SELECT 1; SELECT 2", r"run one SQL statement at a time \(got 2\)"),
            ("   ", r"the SQL query is empty"),
        ],
    )
    def test_a_bad_or_writing_statement_is_refused_with_the_reason(
        self, filled: Store, sql: str, reason: str
    ) -> None:
        with pytest.raises(QueryError, match=reason):
            filled.sql(sql)

    def test_parameters_of_the_wrong_kind_are_refused(self, filled: Store) -> None:
        with pytest.raises(QueryError, match="params must be a list, a tuple or a dict"):
            filled.sql("SELECT ?", 5)  # type: ignore[arg-type]
        with pytest.raises(QueryError, match="SQL error"):
            filled.sql("SELECT ? + ?", [1])

    def test_a_refused_statement_leaves_the_catalog_whole(self, filled: Store) -> None:
        before = filled.sql("SELECT count(*) FROM messages").scalar()
        for sql in ("DROP TABLE messages", "DROP VIEW messages", "DELETE FROM _delta.messages"):
            with pytest.raises(QueryError):
                filled.sql(sql)
        assert filled.sql("SELECT count(*) FROM messages").scalar() == before
        with Store(filled.path) as other:
            assert other.sql("SELECT count(*) FROM messages").scalar() == before

    def test_the_base_file_cannot_be_written_even_through_a_function(self, filled: Store) -> None:
        with pytest.raises(QueryError):
            filled.sql("SELECT * FROM query('DELETE FROM _base.messages')")
        assert filled.sql("SELECT count(*) FROM messages").scalar() == 5


DOC = (ROOT / "docs" / "QUERY.md").read_text("utf-8")


def on_files(sql: str) -> bool:
    """A recipe that reads the store's files with plain DuckDB (not the catalog)."""
    return any(word in sql for word in ("read_parquet", "read_json", "FROM records", "FROM sealed"))


class TestDocumentedRecipes:
    def test_every_catalog_recipe_runs(self, filled: Store) -> None:
        recipes = [r for r in re.findall(r"```sql\n(.*?)```", DOC, re.DOTALL) if not on_files(r)]
        assert len(recipes) >= 5
        for sql in recipes:
            filled.sql(sql)

    def test_the_file_recipes_run_with_plain_duckdb_and_agree(self, filled: Store) -> None:
        import duckdb

        s = filled.session("b")
        s.edit(s.messages()[1].id, "an edited answer")
        filled.compact("b")  # so that both hot and sealed segments are read
        s.delete_message(s.messages()[0].id)
        recipes = [r for r in re.findall(r"```sql\n(.*?)```", DOC, re.DOTALL) if on_files(r)]
        assert len(recipes) >= 3
        con = duckdb.connect()
        results = []
        for sql in recipes:
            results.append(con.sql(sql.replace("'store/", f"'{filled.path}/")))
        (current_at,) = [i for i, sql in enumerate(recipes) if "arg_max" in sql]
        current = results[current_at].to_arrow_table()  # the current messages
        want = filled.sql("SELECT id, text FROM messages ORDER BY session_id, created_at, id")
        assert current.column("id").to_pylist() == [r[0] for r in want.rows]
        texts = [json.loads(c) for c in current.column("content").to_pylist()]
        assert texts == [r[1] for r in want.rows]

    def test_the_python_recipe_reads_every_record(self, filled: Store) -> None:
        filled.compact("a")
        code = re.findall(r"```python\n(.*?)```", DOC, re.DOTALL)[-1]
        scope: dict[str, object] = {}
        exec(code.replace('"store/', f'"{filled.path}/'), scope)
        records = scope["records"]
        assert isinstance(records, list)
        assert sum(r["kind"] == "message" for r in records) == 5
