"""SQL over a store sees the catalog's tables and nothing else: no file is read or written
(outside the store, inside it, or in its cache), no setting changes, nothing is attached or
detached, no extension is installed or loaded, no table or view changes. Every refusal is a
QueryError that says what is not allowed, and leaves everything as it was.

The statement-type check in front only words the common refusals; ``TestTheEngineIsTheGuard``
runs every hostile statement past it, straight on the connection user SQL runs on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import pytest

from convstore import ConvstoreError, QueryError, Store
from convstore.query import QueryLayer
from tests.fixtures.cli import refused

SECRET = "a secret outside the store\n"


class Places:
    """The files hostile statements aim at, filled into each statement's placeholders."""

    def __init__(self, tmp: Path, store: Store) -> None:
        self.tmp = tmp
        self.store = store.path
        self.outside = tmp / "outside.csv"  # an existing file outside the store
        self.outside.write_text("a,b\n1,2\n")
        self.secret = tmp / "secret.txt"
        self.secret.write_text(SECRET)
        self.new = tmp / "written.csv"  # a file that must not come to exist
        session = store.path / "sessions" / "a"
        self.segment = next(p for p in session.iterdir() if p.name.endswith(".zst"))
        self.sealed = next(p for p in session.iterdir() if p.name.endswith(".parquet"))
        self.fake = session / "seg.fake.jsonl.zst"  # a fake segment inside the store
        self.manifest = store.path / ".cache" / "catalog" / "manifest.json"
        self.base = next((store.path / ".cache" / "catalog").glob("base.*.duckdb"))
        self.db = tmp / "other.duckdb"

    def fill(self, sql: str) -> str:
        return sql.format(**{k: str(v) for k, v in vars(self).items()})


HOSTILE = [
    # writing files: COPY, EXPORT, and the same under EXPLAIN ANALYZE (which runs them)
    "COPY messages TO '{new}'",
    "COPY (SELECT 'x') TO '{fake}' (FORMAT csv)",
    "COPY messages TO '{new}' (FORMAT parquet)",
    "EXPLAIN ANALYZE COPY messages TO '{new}'",
    "EXPLAIN ANALYZE COPY (SELECT 'x') TO '{fake}' (FORMAT csv)",
    "EXPORT DATABASE '{tmp}/export'",
    "COPY messages FROM '{outside}'",
    # settings
    "SET threads = 1",
    "SET TimeZone = 'America/New_York'",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET GLOBAL memory_limit = '100MB'",
    "SET search_path = '_delta'",
    "RESET TimeZone",
    "PRAGMA threads = 1",
    "PRAGMA enable_profiling",
    "SET profiling_output = '{new}'",
    "EXPLAIN ANALYZE SET threads = 1",
    # attaching and detaching
    "ATTACH '{db}' AS other",
    "ATTACH ':memory:' AS other",
    "ATTACH '{base}' AS again",
    "DETACH _base",
    "DETACH DATABASE _base",
    "EXPLAIN ANALYZE ATTACH '{db}' AS other",
    "USE _base",
    # extensions
    "INSTALL httpfs",
    "LOAD httpfs",
    "FORCE INSTALL httpfs",
    "LOAD parquet",
    # changing tables and views, the catalog's and new ones
    "CREATE TABLE t (a INT)",
    "CREATE TABLE t AS SELECT * FROM messages",
    "CREATE TEMP TABLE t (a INT)",
    "CREATE VIEW v AS SELECT 1",
    "CREATE OR REPLACE VIEW messages AS SELECT 1 AS x",
    "CREATE SCHEMA s",
    "CREATE MACRO m() AS 1",
    "CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "DROP VIEW messages",
    "DROP TABLE _delta.messages",
    "DROP SCHEMA _delta CASCADE",
    "INSERT INTO messages (id) VALUES ('x')",
    "INSERT INTO _delta.messages (id) VALUES ('x')",
    "INSERT INTO _delta.messages_mask VALUES (1)",
    "UPDATE sessions SET title = 'x'",
    "UPDATE _delta.sessions SET title = 'x'",
    "UPDATE _base.sessions SET title = 'x'",
    "DELETE FROM messages",
    "DELETE FROM _delta.messages",
    "DELETE FROM _base.messages",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "EXPLAIN ANALYZE DROP VIEW messages",
    "EXPLAIN ANALYZE DROP TABLE _delta.messages",
    "EXPLAIN ANALYZE INSERT INTO _delta.messages (id) VALUES ('x')",
    "EXPLAIN ANALYZE UPDATE _delta.sessions SET title = 'x'",
    "EXPLAIN ANALYZE DELETE FROM _delta.messages",
    "EXPLAIN ANALYZE DELETE FROM _base.messages",
    "SELECT * FROM query('DELETE FROM _delta.messages')",
    "CHECKPOINT",
    "VACUUM",
    "CALL pragma_version()",
    "BEGIN TRANSACTION",
    "COMMIT",
    # reading files: outside the store, inside it, its cache
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('{secret}')",
    "SELECT * FROM read_csv('{outside}')",
    "SELECT * FROM read_csv_auto('{outside}')",
    "SELECT * FROM '{outside}'",
    "SELECT * FROM read_blob('{segment}')",
    "SELECT * FROM read_json('{segment}', compression = 'zstd')",
    "SELECT * FROM read_parquet('{sealed}')",
    "SELECT * FROM '{sealed}'",
    "SELECT * FROM parquet_metadata('{sealed}')",
    "SELECT * FROM parquet_schema('{sealed}')",
    "SELECT * FROM read_text('{manifest}')",
    "SELECT * FROM read_json('{manifest}')",
    "SELECT * FROM read_blob('{base}')",
    "SELECT * FROM glob('{store}/*')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_text('{store}/**')",
    "SELECT getenv('HOME')",
    "SELECT * FROM duckdb_extensions()",
    # several statements, comments, CTEs
    "SELECT 1; DROP VIEW messages",
    "SELECT 1; COPY messages TO '{new}'",
    "SELECT 1 -- a comment\n; SET threads = 1",
    "/* harmless */ COPY messages TO '{new}'",
    "-- a query\nDROP VIEW messages",
    "SELECT 1 /* ; DROP VIEW messages */; DROP VIEW messages",
    "WITH d AS (DELETE FROM _delta.messages RETURNING *) SELECT * FROM d",
    "WITH x AS (SELECT 'x' AS id) INSERT INTO _delta.messages (id) SELECT id FROM x",
    "WITH x AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM x",
]


def state(store: Store, places: Places) -> dict[str, Any]:
    """Everything a hostile statement could change: files, the catalog's answers, settings."""
    files = {}
    for root, _, names in os.walk(places.tmp):
        for name in names:
            path = Path(root) / name
            if "locks" in path.parts:
                continue
            st = path.stat()
            files[str(path)] = (st.st_size, st.st_mtime_ns)
    layer = store._query_layer()
    catalog = layer._catalog
    assert catalog is not None
    return {
        "files": files,
        "messages": store.sql("SELECT id, session_id, role, text FROM messages ORDER BY id").rows,
        "sessions": store.sql("SELECT id, title FROM sessions ORDER BY id").rows,
        "search": [h.message_id for h in store.search("hello")],
        "settings": store.sql("SELECT name, value FROM duckdb_settings() ORDER BY 1").rows,
        "databases": store.sql(
            "SELECT database_name, path, readonly FROM duckdb_databases() ORDER BY 1"
        ).rows,
        "own settings": catalog.run("SELECT name, value FROM duckdb_settings() ORDER BY 1"),
        "own databases": catalog.run("SELECT database_name FROM duckdb_databases() ORDER BY 1"),
    }


@pytest.fixture
def places(tmp_path: Path, store: Store) -> Places:
    a = store.create_session("a", title="Alpha")
    a.append("user", "hello there")
    a.append("assistant", "hello, what do you need?")
    store.compact()  # a sealed Parquet file
    a.append("user", "hello again")  # and a hot segment
    store.create_session("b").append("user", "another hello")
    store.sql("SELECT 1")
    return Places(tmp_path, store)


class TestHostileStatementsAreRefused:
    @pytest.mark.parametrize("sql", HOSTILE)
    def test_a_hostile_statement_is_refused_and_changes_nothing(
        self, store: Store, places: Places, sql: str
    ) -> None:
        before = state(store, places)
        with pytest.raises(QueryError) as refusal:
            store.sql(places.fill(sql))
        assert isinstance(refusal.value, ConvstoreError)
        assert "\n" not in str(refusal.value).strip()
        assert SECRET.strip() not in str(refusal.value)
        assert "root:" not in str(refusal.value)
        assert state(store, places) == before
        assert not places.new.exists() and not places.fake.exists()

    @pytest.mark.parametrize(
        ("sql", "says"),
        [
            ("INSTALL httpfs", "extension loading (INSTALL, LOAD) is not allowed"),
            ("LOAD httpfs", "extension loading (INSTALL, LOAD) is not allowed"),
            ("EXPLAIN ANALYZE COPY messages TO '{new}'", "file access"),
            ("SELECT * FROM read_text('/etc/passwd')", "file access"),
            ("SELECT * FROM '{outside}'", "file access"),
            ("SELECT * FROM read_parquet('{sealed}')", "file access"),
            ("EXPLAIN ANALYZE DELETE FROM _delta.messages", "writes are not allowed"),
            ("WITH d AS (DELETE FROM _delta.messages RETURNING *) SELECT * FROM d", "writes"),
            ("COPY messages TO '{new}'", "COPY statements are refused"),
            ("SET threads = 1", "SET statements are refused"),
            ("ATTACH ':memory:' AS m", "ATTACH statements are refused"),
            ("DETACH _base", "DETACH statements are refused"),
        ],
    )
    def test_the_refusal_names_what_is_not_allowed(
        self, store: Store, places: Places, sql: str, says: str
    ) -> None:
        with pytest.raises(QueryError, match="read-only") as refusal:
            store.sql(places.fill(sql))
        assert says in str(refusal.value)

    def test_ordinary_queries_still_answer_after_every_refusal(
        self, store: Store, places: Places
    ) -> None:
        before = state(store, places)
        for sql in HOSTILE:
            with pytest.raises(QueryError):
                store.sql(places.fill(sql))
        assert state(store, places) == before
        assert store.sql("SELECT count(*) FROM messages").scalar() == 4
        with Store(store.path) as other:
            assert other.sql("SELECT count(*) FROM messages").scalar() == 4

    def test_settings_the_store_needs_hold_in_user_sql(self, store: Store, places: Places) -> None:
        del places
        assert store.sql("SELECT current_setting('TimeZone')").scalar() in ("UTC", "Etc/UTC")
        assert store.sql("SELECT current_setting('enable_external_access')").scalar() is False
        assert store.sql("SELECT current_setting('lock_configuration')").scalar() is True
        assert store.sql("SELECT current_setting('autoload_known_extensions')").scalar() is False


class TestTheEngineIsTheGuard:
    """The same statements, run past the statement-type check on the user connection."""

    @pytest.mark.parametrize("sql", HOSTILE)
    def test_without_the_statement_check_nothing_changes_either(
        self, store: Store, places: Places, sql: str
    ) -> None:
        before = state(store, places)
        layer = store._query_layer()
        catalog = layer._catalog
        assert catalog is not None
        try:
            table = QueryLayer._run_user(catalog, places.fill(sql), None)
        except (duckdb.Error, QueryError):
            pass
        else:
            shown = str(table.to_pylist())
            assert SECRET.strip() not in shown and "root:" not in shown
        assert state(store, places) == before
        assert not places.new.exists() and not places.fake.exists()
        assert not (places.tmp / "export").exists() and not places.db.exists()


class TestTheCommandLine:
    @pytest.mark.parametrize(
        "sql",
        [
            "INSTALL httpfs",
            "EXPLAIN ANALYZE COPY messages TO '{new}'",
            "SELECT * FROM read_text('/etc/passwd')",
            "SELECT * FROM read_csv('{outside}')",
            "DROP VIEW messages",
            "SELECT 1; DROP VIEW messages",
        ],
    )
    def test_convstore_sql_refuses_in_one_line_with_exit_code_1(
        self, store: Store, places: Places, sql: str
    ) -> None:
        store.close()
        line = refused(store.path, "sql", places.fill(sql))
        assert line.startswith("error: ") and "read-only" in line
        assert not places.new.exists()
        assert "root:" not in line
