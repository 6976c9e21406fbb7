"""CLI commands on sessions: init, new, ls, rm, branch, merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from convstore import Store
from tests.fixtures.cli import ok, ok_json, refused

INFO_KEYS = [
    "id",
    "title",
    "user_id",
    "org_id",
    "agent_id",
    "metadata",
    "parent",
    "created_at",
    "updated_at",
    "messages",
]


@pytest.fixture
def filled(store_path: Path) -> Path:
    """A store with three sessions of two users."""
    with Store(store_path) as s:
        a = s.create_session(
            "a", title="Alpha", user_id="alice", org_id="acme", created_at="2026-01-01T09:00Z"
        )
        a.append("user", "one", created_at="2026-01-01T10:00:00Z")
        a.append("assistant", "two", created_at="2026-01-01T10:00:01Z")
        b = s.create_session(
            "b", title="Beta", user_id="bob", org_id="acme", created_at="2026-02-01T09:00Z"
        )
        b.append("user", "three", created_at="2026-02-01T10:00:00Z")
        c = s.create_session("c", user_id="alice", org_id="other", created_at="2026-03-01T09:00Z")
        c.append("user", "four", created_at="2026-03-01T10:00:00Z")
    return store_path


class TestInit:
    def test_init_creates_a_store_and_says_so(self, tmp_path: Path) -> None:
        target = tmp_path / "new"
        result = ok(None, "init", str(target))
        assert result.stdout == f"Initialised an empty convstore store in {target}\n"
        assert (target / "convstore.json").exists()

    def test_init_on_an_existing_store_changes_nothing(self, store_path: Path) -> None:
        ok(store_path, "init")
        again = ok(store_path, "init")
        assert "already a convstore store (format version 2)" in again.stdout

    def test_init_json(self, tmp_path: Path) -> None:
        assert ok_json(None, "init", str(tmp_path / "s")) == {
            "store": str(tmp_path / "s"),
            "created": True,
            "version": 2,
        }
        assert ok_json(tmp_path / "s", "init")["created"] is False

    def test_init_refuses_a_folder_that_holds_other_things(self, tmp_path: Path) -> None:
        (tmp_path / "x.txt").write_text("hi")
        line = refused(None, "init", str(tmp_path))
        assert line.startswith("error: ") and "not a convstore store" in line


class TestNew:
    def test_new_prints_only_the_id(self, store_path: Path) -> None:
        result = ok(store_path, "new", "--title", "T", "--user", "u", "--meta", "n=3")
        sid = result.stdout.strip()
        with Store(store_path) as s:
            session = s.session(sid)
            assert (session.title, session.user_id, session.metadata) == ("T", "u", {"n": 3})

    def test_new_json_is_the_session_info(self, store_path: Path) -> None:
        info = ok_json(store_path, "new", "--id", "chat-1", "--org", "acme", "--agent", "bot")
        assert list(info) == INFO_KEYS
        assert (info["id"], info["org_id"], info["agent_id"], info["messages"]) == (
            "chat-1",
            "acme",
            "bot",
            0,
        )

    def test_new_refuses_an_id_in_use_and_a_bad_id(self, store_path: Path) -> None:
        ok(store_path, "new", "--id", "x")
        assert "exists" in refused(store_path, "new", "--id", "x")
        assert "not allowed" in refused(store_path, "new", "--id", "../x", code=2)

    def test_a_bad_meta_is_bad_usage(self, store_path: Path) -> None:
        line = refused(store_path, "new", "--meta", "novalue", code=2)
        assert line.startswith("usage error: ") and "KEY=VALUE" in line


class TestLs:
    def test_ls_is_a_table_newest_first(self, filled: Path) -> None:
        lines = ok(filled, "ls").stdout.splitlines()
        assert lines[0].split() == ["ID", "TITLE", "USER", "ORG", "MSGS", "UPDATED", "(UTC)"]
        assert [line.split()[0] for line in lines[1:]] == ["c", "b", "a"]
        assert "(untitled)" in lines[1]
        assert lines[3].split()[1:] == ["Alpha", "alice", "acme", "2", "2026-01-01", "10:00"]

    def test_ls_filters(self, filled: Path) -> None:
        def ids(*args: str) -> list[str]:
            return [i["id"] for i in ok_json(filled, "ls", *args)]

        assert ids("--user", "alice") == ["c", "a"]
        assert ids("--org", "acme") == ["b", "a"]
        assert ids("--since", "2026-02-01") == ["c", "b"]
        assert ids("--until", "2026-01-31") == ["a"]
        assert ids("--limit", "1") == ["c"]
        assert ids("--limit", "1", "--offset", "1") == ["b"]

    def test_ls_json_schema(self, filled: Path) -> None:
        infos = ok_json(filled, "ls")
        assert [list(i) for i in infos] == [INFO_KEYS] * 3
        assert infos[2]["messages"] == 2
        assert infos[2]["updated_at"] == "2026-01-01T10:00:01.000000Z"

    def test_ls_on_an_empty_store_and_with_no_match(self, filled: Path, store_path: Path) -> None:
        assert ok(filled, "ls", "--user", "nobody").stdout == "No sessions match.\n"
        assert ok_json(filled, "ls", "--user", "nobody") == []

    def test_ls_refuses_a_folder_that_is_not_a_store(self, tmp_path: Path) -> None:
        line = refused(tmp_path / "nothing", "ls")
        assert line == (
            f"error: no convstore store at {tmp_path / 'nothing'}; create one with "
            f"`convstore init {tmp_path / 'nothing'}` or point --store (or $CONVSTORE_DIR) at "
            "an existing one"
        )
        assert not (tmp_path / "nothing").exists()

    def test_store_comes_from_the_environment_then_the_option(
        self, filled: Path, tmp_path: Path
    ) -> None:
        from typer.testing import CliRunner

        from convstore.cli import app

        by_env = CliRunner().invoke(app, ["ls", "--json"], env={"CONVSTORE_DIR": str(filled)})
        assert by_env.exit_code == 0 and len(by_env.stdout) > 10
        other = tmp_path / "other"
        ok(other, "init")
        # The command's own --store wins over the one given before it and over the environment.
        overridden = CliRunner().invoke(
            app,
            ["--store", str(filled), "ls", "--store", str(other), "--json"],
            env={"CONVSTORE_DIR": str(filled)},
        )
        assert overridden.stdout.strip() == "[]"

    def test_a_bad_date_is_refused_with_the_accepted_forms(self, filled: Path) -> None:
        line = refused(filled, "ls", "--since", "last tuesday", code=2)
        assert line.startswith(
            "usage error: Invalid value for '--since': cannot read 'last tuesday' as a date"
        )

    def test_a_negative_limit_is_bad_usage(self, filled: Path) -> None:
        assert refused(filled, "ls", "--limit", "-1", code=2).startswith("usage error:")


class TestRm:
    def test_rm_deletes_a_session(self, filled: Path) -> None:
        assert ok(filled, "rm", "a").stdout == "Deleted session a\n"
        assert [i["id"] for i in ok_json(filled, "ls")] == ["c", "b"]
        assert "no session 'a'" in refused(filled, "rm", "a")

    def test_rm_message_deletes_one_message(self, filled: Path) -> None:
        mid = ok_json(filled, "show", "a")["messages"][0]["id"]
        assert ok_json(filled, "rm", "a", "--message", mid) == {
            "session": "a",
            "message": mid,
            "deleted": True,
            "branches": [],
        }
        assert [m["text"] for m in ok_json(filled, "show", "a")["messages"]] == ["two"]
        assert "no message" in refused(filled, "rm", "a", "--message", mid)

    def test_rm_names_the_branches_that_still_show_the_deleted_sessions_messages(
        self, filled: Path
    ) -> None:
        ok(filled, "branch", "a", "--id", "a.1")
        ok(filled, "branch", "a.1", "--id", "a.1.1")
        result = ok(filled, "rm", "a")
        assert result.stdout == "Deleted session a\n"
        assert result.stderr == (
            "Note: 2 branch(es) still show its messages, inherited from it: a.1, a.1.1. "
            "To delete them too: convstore rm a.1 && convstore rm a.1.1\n"
        )
        assert ok_json(filled, "rm", "a.1") == {
            "session": "a.1",
            "message": None,
            "deleted": True,
            "branches": ["a.1.1"],
        }
        assert ok(filled, "rm", "a.1.1").stderr == ""


class TestBranchAndMerge:
    def test_branch_at_a_message_shares_history_up_to_it(self, filled: Path) -> None:
        first = ok_json(filled, "show", "a")["messages"][0]["id"]
        bid = ok(filled, "branch", "a", "--at", first).stdout.strip()
        shown = ok_json(filled, "show", bid)
        parent = shown["session"]["parent"]
        assert (parent["session"], parent["message"]) == ("a", first)
        assert [m["text"] for m in shown["messages"]] == ["one"]
        assert shown["messages"][0]["session_id"] == "a"
        ok(filled, "add", "-s", bid, "branch reply")
        assert [m["text"] for m in ok_json(filled, "show", bid)["messages"]] == [
            "one",
            "branch reply",
        ]
        assert [m["text"] for m in ok_json(filled, "show", "a")["messages"]] == ["one", "two"]

    def test_branch_json_and_options(self, filled: Path) -> None:
        info = ok_json(filled, "branch", "a", "--id", "a2", "--title", "Other way")
        assert (info["id"], info["title"], info["messages"]) == ("a2", "Other way", 2)
        assert info["parent"]["session"] == "a"

    def test_branch_at_an_unknown_message_is_refused(self, filled: Path) -> None:
        assert "is not in session 'a'" in refused(filled, "branch", "a", "--at", "f" * 26)

    def test_merge_of_a_branch_with_its_parent_keeps_the_shared_history_once(
        self, filled: Path
    ) -> None:
        ok(filled, "branch", "a", "--id", "a2")
        ok(filled, "add", "-s", "a2", "on the branch")
        merged = ok_json(filled, "merge", "a", "a2", "--id", "both")
        assert merged["messages"] == 3
        shown = ok_json(filled, "show", "both")
        assert [m["text"] for m in shown["messages"]] == ["one", "two", "on the branch"]

    def test_merge_refuses_a_session_given_twice_and_writes_nothing(self, filled: Path) -> None:
        line = refused(filled, "merge", "a", "a", "--id", "aa", code=2)
        assert line == (
            "usage error: Invalid value for 'SESSION...': session 'a' is given twice; "
            "name each session once (see `convstore merge --help`)"
        )
        assert "aa" not in [s["id"] for s in ok_json(filled, "ls")]

    def test_merge_interleaves_by_time_with_provenance(self, filled: Path) -> None:
        mid = ok(filled, "merge", "a", "b", "--id", "ab").stdout.strip()
        assert mid == "ab"
        shown = ok_json(filled, "show", "ab")
        assert [m["text"] for m in shown["messages"]] == ["one", "two", "three"]
        assert shown["messages"][2]["metadata"]["merged_from"]["session"] == "b"
        assert shown["session"]["metadata"] == {"merged_from": ["a", "b"]}

    def test_merge_needs_two_sessions(self, filled: Path) -> None:
        assert "at least two" in refused(filled, "merge", "a", code=2)
        assert refused(filled, "merge", code=2).startswith("usage error: Missing argument")
