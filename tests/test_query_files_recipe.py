"""docs/QUERY.md's "Reading the store without convstore": plain DuckDB on the files of any store.

The SQL blocks of that section are taken from the page itself and run with plain ``duckdb`` (no
convstore, no catalog), so a change to the page that breaks them fails here.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from convstore import Store
from convstore.errors import SessionNotFound
from convstore.records import content_text
from tests.fixtures.cli import ok

ROOT = Path(__file__).resolve().parent.parent
SECTION = (
    (ROOT / "docs" / "QUERY.md")
    .read_text("utf-8")
    .split("## Reading the store without convstore")[1]
    .split("\n## ")[0]
)
BLOCKS = re.findall(r"```sql\n(.*?)```", SECTION, re.DOTALL)

Row = tuple[str, str, str]


def run_recipes(store: Path) -> list[Row]:
    """Every SQL block of the section, in order, in one fresh DuckDB: the current messages."""
    assert len(BLOCKS) >= 4 and sum("arg_max" in b for b in BLOCKS) == 1
    con = duckdb.connect()
    current: list[Row] = []
    for sql in BLOCKS:
        result = con.sql(sql.replace("'store/", f"'{store}/"))
        if "arg_max" in sql:
            assert result is not None
            current = [
                (session, mid, content_text(json.loads(content)))
                for session, mid, _role, _at, content in result.fetchall()
            ]
        elif result is not None:
            result.fetchall()
    con.close()
    return current


def through_convstore(store: Path) -> list[Row]:
    """What ``Store.session(...).messages()`` shows: each session's own messages."""
    rows: list[Row] = []
    with Store(store) as s:
        for sid in s.session_ids():
            try:
                messages = s.session(sid).messages()
            except SessionNotFound:  # a deleted session
                continue
            rows += [(sid, m.id, m.text) for m in messages if m.session_id == sid]
    return sorted(rows)


def edited_and_deleted(s: Store) -> None:
    a = s.create_session("a")
    first = a.append("user", "what is a fjord?")
    answer = a.append("assistant", [{"type": "text", "text": "a long narrow inlet"}])
    a.append("user", "thanks")
    a.edit(answer.id, "a narrow sea inlet between cliffs")
    a.delete_message(first.id)
    b = s.create_session("b")
    b.extend([{"role": "user", "content": f"question {i}"} for i in range(5)])
    gone = s.create_session("gone")
    gone.append("user", "this session is deleted")
    s.delete_session("gone")


def never_compacted(path: Path) -> None:
    with Store(path) as s:
        edited_and_deleted(s)


def compacted(path: Path) -> None:
    with Store(path) as s:
        edited_and_deleted(s)
        s.compact()


def mixed(path: Path) -> None:
    with Store(path) as s:
        edited_and_deleted(s)
        s.create_session("later-gone").append("user", "sealed, then deleted")
        s.compact()
        a = s.session("a")
        kept = a.messages()
        a.edit(kept[-1].id, "edited after sealing")
        a.delete_message(kept[0].id)
        a.append("assistant", "written after sealing")
        s.delete_session("later-gone")
        branch = s.branch("b", branch_id="b-branch")
        branch.append("user", "a question on the branch")
        s.session("b").append("user", "the parent goes on")


def revived_by_a_clone(path: Path) -> None:
    with Store(path) as s:
        edited_and_deleted(s)
        s.create_session("shared").append("user", "written before the delete")
    clone = path.parent / "clone"
    shutil.copytree(path, clone, ignore=shutil.ignore_patterns(".cache"))  # its own writer
    with Store(path) as s:
        s.delete_session("shared")
    with Store(clone) as c:  # apart, it has not seen the delete: it writes after it
        c.session("shared").append("user", "written apart, after the delete")
    for hot in (clone / "sessions" / "shared").glob("hot.*"):
        if not (path / "sessions" / "shared" / hot.name).exists():
            shutil.copy2(hot, path / "sessions" / "shared" / hot.name)  # what a sync brings


def sealed_only(path: Path) -> None:
    compacted(path)
    # Compaction leaves each writer an empty hot segment to append to next; with those gone
    # (they hold no record) the store is sealed files only, as a copy that skipped empty
    # files would be.
    for hot in path.glob("sessions/*/hot.*"):
        assert hot.stat().st_size == 0
        hot.unlink()


def format_1_names(path: Path) -> None:
    compacted(path)
    renamed = 0
    for sealed in path.glob("sessions/*/sealed.*.*.parquet"):
        digest = sealed.name.split(".")[-2]
        sealed.rename(sealed.with_name(f"sealed.{digest}.parquet"))
        renamed += 1
    assert renamed


def demo(path: Path) -> None:
    ok(None, "demo", str(path))


STORES: dict[str, Callable[[Path], None]] = {
    "never compacted": never_compacted,
    "compacted": compacted,
    "sealed files only": sealed_only,
    "hot and sealed, edits, deletes, deleted sessions, a branch": mixed,
    "format 1 sealed names": format_1_names,
    "a deleted session brought back by a clone": revived_by_a_clone,
    "the demo store": demo,
}


class TestReadingTheStoreWithoutConvstore:
    @pytest.mark.parametrize("make", STORES.values(), ids=list(STORES))
    def test_the_documented_sql_shows_the_current_messages_of_any_store(
        self, tmp_path: Path, make: Callable[[Path], None]
    ) -> None:
        path = tmp_path / "store"
        make(path)
        want = through_convstore(path)
        assert want
        assert sorted(run_recipes(path)) == want

    def test_the_stores_cover_hot_only_sealed_only_and_both(self, tmp_path: Path) -> None:
        kinds = {}
        for name, make in STORES.items():
            path = tmp_path / name.replace(" ", "-").replace(",", "")
            make(path)
            kinds[name] = (
                any(path.glob("sessions/*/hot.*")),
                any(path.glob("sessions/*/sealed.*")),
            )
        assert kinds["never compacted"] == (True, False)
        assert kinds["sealed files only"] == (False, True)
        assert kinds["hot and sealed, edits, deletes, deleted sessions, a branch"] == (True, True)

    def test_a_session_brought_back_after_a_drop_shows_only_what_followed_it(
        self, tmp_path: Path
    ) -> None:
        revived_by_a_clone(tmp_path / "store")
        shown = [text for sid, _, text in run_recipes(tmp_path / "store") if sid == "shared"]
        assert shown == ["written apart, after the delete"]

    def test_a_store_with_no_session_reads_as_empty(self, tmp_path: Path) -> None:
        Store(tmp_path / "store").close()
        assert run_recipes(tmp_path / "store") == []
