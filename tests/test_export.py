"""Export: the formats, the scopes, and the byte-identical JSON round trip."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convstore import InvalidInput, SessionNotFound, Store
from convstore.exporters import COLUMNS, EPOCH, export, select_sessions
from convstore.importers import import_files
from tests.fixtures.cli import IMPORT, SAMPLE


def roundtrip(source: Store, tmp_path: Path) -> tuple[bytes, bytes]:
    """Export ``source``, import that into an empty store, export again: both files' bytes."""
    first = tmp_path / "first.json"
    export(source, select_sessions(source), "json", first)
    with Store(tmp_path / "copy") as copy:
        import_files(copy, [first])
        second = tmp_path / "second.json"
        export(copy, select_sessions(copy), "json", second)
    return first.read_bytes(), second.read_bytes()


@pytest.fixture
def small(store: Store) -> Store:
    """A store with a branch, an edit, a deletion, a state and parts of every kind."""
    import_files(store, [IMPORT / "convstore_small.json", IMPORT / "chatgpt_branches.json"])
    s = store.create_session("live", title="Live", user_id="carol", org_id="acme")
    s.append("user", "hello", metadata={"n": 1.5})
    gone = s.append("assistant", "to be deleted")
    s.append("assistant", [{"type": "tool_call", "id": "c1", "name": "f", "arguments": None}])
    edited = s.append("user", "before")
    s.edit(edited.id, "after")
    s.delete_message(gone.id)
    s.save_state({"a": 1})
    s.save_state({"a": 2, "b": [True, None]})
    return store


class TestRoundTrip:
    def test_export_import_export_gives_the_same_bytes(self, small: Store, tmp_path: Path) -> None:
        first, second = roundtrip(small, tmp_path)
        assert first == second
        doc = json.loads(first)
        assert doc["format"] == "convstore-export" and doc["version"] == 1
        live = next(s for s in doc["sessions"] if s["id"] == "live")
        assert [m["content"] for m in live["messages"]][-1] == "after"
        assert live["messages"][-1]["edited_at"] is not None
        assert live["state"]["value"] == {"a": 2, "b": [True, None]}
        assert "to be deleted" not in first.decode()

    def test_the_sample_data_survives_the_round_trip(self, store: Store, tmp_path: Path) -> None:
        import_files(
            store,
            [
                SAMPLE / name
                for name in (
                    "sessions.json",
                    "chatgpt_conversations.json",
                    "claude_conversations.json",
                )
            ],
        )
        first, second = roundtrip(store, tmp_path)
        assert first == second
        original = json.loads((SAMPLE / "sessions.json").read_text("utf-8"))
        exported = {s["id"]: s for s in json.loads(first)["sessions"]}
        for s in original["sessions"]:
            mine = exported[s["id"]]
            for key in (
                "title",
                "user_id",
                "org_id",
                "agent_id",
                "metadata",
                "created_at",
                "parent",
            ):
                assert mine[key] == s[key], (s["id"], key)
            assert [
                (m["role"], m["content"], m["metadata"], m["created_at"]) for m in mine["messages"]
            ] == [(m["role"], m["content"], m["metadata"], m["created_at"]) for m in s["messages"]]

    def test_exported_at_is_the_newest_time_in_the_file_not_the_clock(
        self, small: Store, tmp_path: Path
    ) -> None:
        out = tmp_path / "x.json"
        export(small, select_sessions(small), "json", out)
        doc = json.loads(out.read_text("utf-8"))
        times = [
            t
            for s in doc["sessions"]
            for m in s["messages"]
            for t in (m["created_at"], m["edited_at"])
            if t
        ]
        times += [s["created_at"] for s in doc["sessions"]]
        times += [s["state"]["created_at"] for s in doc["sessions"] if "state" in s]
        assert doc["exported_at"] == max(times)

    def test_an_empty_export_is_valid_and_stable(self, store: Store, tmp_path: Path) -> None:
        first, second = roundtrip(store, tmp_path)
        assert first == second
        assert json.loads(first) == {
            "format": "convstore-export",
            "version": 1,
            "exported_at": EPOCH,
            "sessions": [],
        }

    def test_exporting_a_branch_brings_its_parent_along(self, small: Store, tmp_path: Path) -> None:
        out = tmp_path / "branch.json"
        report = export(small, select_sessions(small, ["main.alt"]), "json", out)
        assert report.sessions == ["main", "main.alt"]
        with Store(tmp_path / "other") as other:
            import_files(other, [out])
            assert [m.text for m in other.session("main.alt").messages()][-1] == "Branch question"

    def test_a_branch_whose_parent_was_deleted_exports_what_it_shows_and_imports_cleanly(
        self, store: Store, tmp_path: Path
    ) -> None:
        parent = store.create_session("a", title="Parent")
        parent.append("system", "be brief")
        parent.append("user", "the parent's question")
        branch = store.branch("a", branch_id="b")
        branch.append("assistant", "the branch's answer")
        store.branch("b", branch_id="c").append("user", "and on the branch of the branch")
        store.delete_session("a")
        shown = {sid: store.session(sid).messages() for sid in ("b", "c")}
        out = tmp_path / "c.json"
        report = export(store, select_sessions(store, ["c"]), "json", out)
        assert report.sessions == ["b", "c"]
        document = json.loads(out.read_text("utf-8"))
        assert [s["parent"] is None for s in document["sessions"]] == [True, False]
        with Store(tmp_path / "other") as other:
            import_files(other, [out])
            assert "a" not in other
            for sid, messages in shown.items():
                got = other.session(sid).messages()
                assert [(m.id, m.role, m.text) for m in got] == [
                    (m.id, m.role, m.text) for m in messages
                ]
            again = tmp_path / "again.json"
            export(other, select_sessions(other, ["c"]), "json", again)
        assert again.read_bytes() == out.read_bytes()


class TestScopes:
    def test_named_sessions_only(self, small: Store) -> None:
        chosen = select_sessions(small, ["live", "main"])
        assert [s.id for s in chosen] == ["main", "live"]  # creation order

    def test_filters_by_user_org_and_time(self, small: Store) -> None:
        assert [s.id for s in select_sessions(small, user_id="carol")] == ["live"]
        assert {s.id for s in select_sessions(small, org_id="acme")} == {"main", "main.alt", "live"}
        # A bare date as until includes that day; "main" was last active on 6 January (the
        # edit in the file) or 5 January (its last record), depending on what counts.
        old = {s.id for s in select_sessions(small, until="2026-01-04")}
        assert old == {s.id for s in small.sessions() if not s.id.startswith(("main", "live"))}
        assert "main" in {s.id for s in select_sessions(small, until="2026-01-06")}
        window = select_sessions(small, since="2026-01-05", until="2026-01-07")
        assert {s.id for s in window} == {"main", "main.alt"}

    def test_filters_narrow_named_sessions(self, small: Store) -> None:
        assert [s.id for s in select_sessions(small, ["live", "main"], user_id="bob")] == ["main"]

    def test_an_unknown_session_is_refused(self, small: Store) -> None:
        with pytest.raises(SessionNotFound):
            select_sessions(small, ["nope"])


class TestFlatFormats:
    def test_jsonl_has_one_row_per_stored_message(self, small: Store) -> None:
        buf = io.StringIO()
        report = export(small, select_sessions(small, ["main", "main.alt"]), "jsonl", stdout=buf)
        rows = [json.loads(line) for line in buf.getvalue().splitlines()]
        assert report.messages == len(rows) == 3  # the branch's inherited messages are not repeated
        assert list(rows[0]) == list(COLUMNS)
        assert rows[1]["content"] == [{"type": "text", "text": "Second, edited"}]
        assert rows[2]["session_id"] == "main.alt"
        assert report.bytes == len(buf.getvalue().encode())

    def test_csv_has_the_same_columns_with_json_in_cells(
        self, small: Store, tmp_path: Path
    ) -> None:
        out = tmp_path / "x.csv"
        export(small, select_sessions(small, ["live"]), "csv", out)
        with open(out, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == list(COLUMNS)
        assert [r["text"] for r in rows] == ["hello", "f()", "after"]
        assert json.loads(rows[0]["metadata"]) == {"n": 1.5}
        assert json.loads(rows[1]["content"])[0]["type"] == "tool_call"

    def test_parquet_has_the_same_columns_with_real_timestamps(
        self, small: Store, tmp_path: Path
    ) -> None:
        out = tmp_path / "x.parquet"
        report = export(small, select_sessions(small), "parquet", out)
        table = pq.read_table(out)
        assert table.column_names == list(COLUMNS)
        assert table.num_rows == report.messages
        assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"

    def test_parquet_in_several_row_groups_keeps_every_row_in_order(
        self, small: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from convstore import exporters

        monkeypatch.setattr(exporters, "_ROW_GROUP", 2)
        out = tmp_path / "x.parquet"
        export(small, select_sessions(small), "parquet", out)
        buf = io.StringIO()
        export(small, select_sessions(small), "jsonl", stdout=buf)
        expected = [json.loads(line)["message_id"] for line in buf.getvalue().splitlines()]
        assert pq.ParquetFile(out).num_row_groups > 1
        assert pq.read_table(out).column("message_id").to_pylist() == expected

    def test_an_empty_parquet_export_has_the_columns(self, store: Store, tmp_path: Path) -> None:
        out = tmp_path / "empty.parquet"
        assert export(store, [], "parquet", out).messages == 0
        table = pq.read_table(out)
        assert (table.num_rows, table.column_names) == (0, list(COLUMNS))

    def test_parquet_needs_a_file(self, small: Store) -> None:
        with pytest.raises(InvalidInput, match="Parquet"):
            export(small, select_sessions(small), "parquet")

    def test_an_unknown_format_is_refused(self, small: Store) -> None:
        with pytest.raises(InvalidInput, match="export format 'xml'"):
            export(small, select_sessions(small), "xml")


class TestMarkdown:
    def test_a_transcript_shows_roles_times_and_every_part_kind(self, small: Store) -> None:
        buf = io.StringIO()
        export(
            small,
            select_sessions(small, ["c0ffee00-0000-4000-8000-000000000001"]),
            "markdown",
            stdout=buf,
        )
        text = buf.getvalue()
        assert text.startswith("# Parsing JSON\n")
        assert "## user · 2026-01-01 00:00:00 UTC" in text
        assert "> *thinking: Picking a module*\n> The standard json module is enough." in text
        assert "![image](sediment://file_00000000abc)" in text

    def test_a_branch_reads_with_its_inherited_history(self, small: Store) -> None:
        buf = io.StringIO()
        export(small, select_sessions(small, ["main.alt"]), "markdown", stdout=buf)
        text = buf.getvalue()
        assert "Branched from `main` at message `0600000000000000000000beef`." in text
        assert text.index("First") < text.index("Branch question")
        assert "# Main line" not in text  # only JSON brings ancestors along as sessions


class TestAtomicWrites:
    def test_a_failed_export_leaves_the_old_file_and_no_temporary(
        self, small: Store, tmp_path: Path
    ) -> None:
        out = tmp_path / "keep.json"
        out.write_text("old", "utf-8")
        with pytest.raises(InvalidInput):
            export(small, select_sessions(small), "nope", out)
        assert out.read_text("utf-8") == "old"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


# Any character but lone surrogates, which no JSON encoder can write as UTF-8.
_CHARS = st.characters(exclude_categories=["Cs"])
_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_CHARS, max_size=20)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_text = st.text(_CHARS, max_size=40)
_content = _text | st.lists(
    st.builds(lambda t: {"type": "text", "text": t}, _text), min_size=1, max_size=3
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(["user", "assistant", "tool"]),
            _content,
            st.dictionaries(st.text(max_size=8), _json, max_size=3),
        ),
        max_size=5,
    ),
    title=st.none() | _text,
)
def test_any_content_and_metadata_survive_the_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    messages: list[tuple[str, Any, dict[str, Any]]],
    title: str | None,
) -> None:
    base = tmp_path_factory.mktemp("rt")
    with Store(base / "src") as src:
        s = src.create_session(
            "x", title=title, metadata={"m": messages[0][2] if messages else None}
        )
        s.extend({"role": r, "content": c, "metadata": m} for r, c, m in messages)
        first, second = roundtrip(src, base)
    assert first == second
    doc = json.loads(first)
    assert [(m["role"], m["content"], m["metadata"]) for m in doc["sessions"][0]["messages"]] == [
        (r, c, m) for r, c, m in messages
    ]
