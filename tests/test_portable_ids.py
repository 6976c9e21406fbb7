"""Session ids stay portable to Windows and macOS, case-insensitive file systems included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from convstore import (
    CaseCollision,
    ImportFormatError,
    InvalidSessionId,
    SessionExists,
    Store,
)
from convstore.importers import import_files

from .conftest import start_python
from .test_bad_input import snapshot

NOT_ALLOWED = (
    "is not allowed: use letters, digits, '_', '-' and '.', start with a letter, digit or '_', "
    "and do not use '..'"
)

ACCEPTED = ["abc", "A", "_x", "0", "a.b", "a-b_c.d", "v1.2.3", "x" * 128, "CONSOLE", "COM10"]

REFUSED: list[tuple[object, str]] = [
    (
        "abc.",
        "session id 'abc.' ends with '.', which Windows drops from folder names; choose another",
    ),
    (
        "a.b.",
        "session id 'a.b.' ends with '.', which Windows drops from folder names; choose another",
    ),
    ("COM0", "session id 'COM0' is a reserved device name on Windows; choose another"),
    ("lpt0.txt", "session id 'lpt0.txt' is a reserved device name on Windows; choose another"),
    ("CON", "session id 'CON' is a reserved device name on Windows; choose another"),
    ("nul.tar.gz", "session id 'nul.tar.gz' is a reserved device name on Windows; choose another"),
    ("Com9", "session id 'Com9' is a reserved device name on Windows; choose another"),
    ("", "session id is empty; pass a name or omit it to get a new id"),
    ("x" * 129, "session id is 129 characters long; the limit is 128"),
    (".hidden", f"session id '.hidden' {NOT_ALLOWED}"),
    ("a..b", f"session id 'a..b' {NOT_ALLOWED}"),
    ("a/b", f"session id 'a/b' {NOT_ALLOWED}"),
    ("a\\b", f"session id 'a\\\\b' {NOT_ALLOWED}"),
    ("a:b", f"session id 'a:b' {NOT_ALLOWED}"),
    ("a b", f"session id 'a b' {NOT_ALLOWED}"),
    ("abc ", f"session id 'abc ' {NOT_ALLOWED}"),
    ("a*b", f"session id 'a*b' {NOT_ALLOWED}"),
    ("a?b", f"session id 'a?b' {NOT_ALLOWED}"),
    ('a"b', f"session id 'a\"b' {NOT_ALLOWED}"),
    ("a<b>", f"session id 'a<b>' {NOT_ALLOWED}"),
    ("a|b", f"session id 'a|b' {NOT_ALLOWED}"),
    ("é", f"session id 'é' {NOT_ALLOWED}"),
    (42, "session id must be a string, not int"),
]


def export_doc(path: Path, *ids: str) -> Path:
    doc = {
        "format": "convstore-export",
        "version": 1,
        "sessions": [{"id": sid, "created_at": "2026-01-01T00:00:00Z"} for sid in ids],
    }
    path.write_text(json.dumps(doc))
    return path


def make_legacy(store: Store, sid: str) -> None:
    """A session an earlier convstore created, under an id the rules now refuse for new ones:
    written by the store's own writer, as create_session did then."""
    store._write(sid, [store._record("session", sid, title="old", metadata={})])
    store.session(sid).append("user", "still here")


class TestNewIds:
    @pytest.mark.parametrize("sid", ACCEPTED)
    def test_a_portable_id_is_accepted_and_names_its_folder(self, store: Store, sid: str) -> None:
        store.create_session(sid).append("user", "hi")
        assert (store.path / "sessions" / sid).is_dir()
        assert store.session(sid).messages()[0].content == "hi"

    @pytest.mark.parametrize(("sid", "message"), REFUSED)
    def test_an_id_that_is_not_portable_is_refused_with_its_reason(
        self, store: Store, sid: object, message: str
    ) -> None:
        base = store.create_session("base")
        base.append("user", "hi")
        before = snapshot(store.path)
        with pytest.raises(InvalidSessionId) as e:
            store.create_session(sid)  # type: ignore[arg-type]
        assert str(e.value) == message
        with pytest.raises(InvalidSessionId) as e:
            base.branch(branch_id=sid)  # type: ignore[arg-type]
        assert str(e.value) == message
        assert snapshot(store.path) == before

    @pytest.mark.parametrize(("sid", "message"), [r for r in REFUSED if isinstance(r[0], str)])
    def test_an_export_holding_such_an_id_is_refused_whole(
        self, store: Store, tmp_path: Path, sid: str, message: str
    ) -> None:
        doc = export_doc(tmp_path / "export.json", "fine", sid)
        with pytest.raises(ImportFormatError) as e:
            import_files(store, [doc])
        assert str(e.value) == f"{doc}: sessions[1].id: {message}; nothing was imported"
        assert store.session_ids() == []


class TestCaseCollisions:
    def test_an_id_that_differs_only_by_case_is_refused_naming_the_other(
        self, store: Store
    ) -> None:
        store.create_session("Chat-1").append("user", "hi")
        before = snapshot(store.path)
        for sid in ("chat-1", "CHAT-1", "cHAT-1"):
            with pytest.raises(CaseCollision) as e:
                store.create_session(sid)
            assert isinstance(e.value, SessionExists)
            assert str(e.value) == (
                f"session {sid!r} differs only by case from session 'Chat-1' in {store.path}; "
                "on macOS and Windows both would be one folder. Choose another id or open it "
                "with store.session('Chat-1')"
            )
        with pytest.raises(CaseCollision, match="differs only by case from session 'Chat-1'"):
            store.session("Chat-1").branch(branch_id="CHAT-1")
        assert snapshot(store.path) == before
        assert store.session_ids() == ["Chat-1"]

    def test_a_case_twin_that_arrived_by_git_is_seen_too(self, tmp_path: Path) -> None:
        with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
            b.create_session("Notes").append("user", "from b")
            # What a pull does: the other clone's folder appears, no convstore involved.
            shutil.copytree(b.path / "sessions" / "Notes", a.path / "sessions" / "Notes")
            with pytest.raises(CaseCollision, match="'notes' differs only by case from session"):
                a.create_session("notes")

    def test_importing_a_case_twin_of_a_stored_session_writes_nothing(
        self, store: Store, tmp_path: Path
    ) -> None:
        store.create_session("abc")
        before = snapshot(store.path)
        doc = export_doc(tmp_path / "export.json", "first", "ABC")
        with pytest.raises(CaseCollision) as e:
            import_files(store, [doc])
        assert str(e.value) == (
            f"{doc}: sessions[1]: session id 'ABC' differs only by case from session 'abc' in "
            f"{store.path}; on macOS and Windows both would be one folder; nothing was imported"
        )
        assert snapshot(store.path) == before

    def test_an_export_holding_two_case_twins_is_refused(
        self, store: Store, tmp_path: Path
    ) -> None:
        doc = export_doc(tmp_path / "export.json", "abc", "ABC")
        with pytest.raises(ImportFormatError) as e:
            import_files(store, [doc])
        assert str(e.value) == (
            f"{doc}: sessions[1]: session id 'ABC' differs only by case from 'abc' at "
            "sessions[0]; on macOS and Windows both would be one folder; nothing was imported"
        )
        other = export_doc(tmp_path / "other.json", "Abc")
        with pytest.raises(ImportFormatError, match="'abc' differs only by case from 'Abc'"):
            import_files(store, [other, export_doc(tmp_path / "one.json", "abc")])
        assert store.session_ids() == []

    def test_two_processes_creating_case_twins_at_once_make_one_session(
        self, store_path: Path
    ) -> None:
        Store(store_path).close()
        code = (
            "import sys\n"
            "from convstore import Store, SessionExists\n"
            "with Store(sys.argv[1]) as s:\n"
            "    for i in range(150):\n"
            "        try:\n"
            "            s.create_session(sys.argv[2] + str(i))\n"
            "        except SessionExists:\n"
            "            pass\n"
        )
        procs = [start_python(code, str(store_path), p) for p in ("case", "CASE", "Case")]
        for p in procs:
            assert p.wait(timeout=300) == 0
        names = sorted(p.name for p in (store_path / "sessions").iterdir())
        assert len(names) == 150
        assert len({n.lower() for n in names}) == 150

    def test_check_reports_two_folders_that_differ_only_by_case(self, tmp_path: Path) -> None:
        with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
            a.create_session("abc").append("user", "a")
            b.create_session("ABC").append("user", "b")
            shutil.copytree(b.path / "sessions" / "ABC", a.path / "sessions" / "ABC")
            report = a.check()
            assert [(Path(i.path).name, i.problem) for i in report.issues] == [
                (
                    "abc",
                    "sessions 'ABC' and 'abc' differ only by case: on macOS and Windows they "
                    "share one folder; rename one of them on a case-sensitive system (export "
                    "it, import it under a new id)",
                )
            ]

    def test_check_reports_two_sessions_merged_into_one_folder(self, tmp_path: Path) -> None:
        with Store(tmp_path / "a") as a, Store(tmp_path / "b") as b:
            a.create_session("abc").append("user", "a")
            b.create_session("ABC").append("user", "b")
            # What a case-insensitive file system makes of a pull that brings 'ABC': its files
            # land in the folder 'abc'.
            for f in (b.path / "sessions" / "ABC").iterdir():
                shutil.copy(f, a.path / "sessions" / "abc" / f.name)
            problems = [i.problem for i in a.check().issues]
            assert len(problems) == 2  # the twin's session record and its message
            assert all(
                p.startswith("record '")
                and p.endswith(
                    ": sessions 'abc' and 'ABC' differ only by case: on macOS and Windows they "
                    "share one folder; rename one of them on a case-sensitive system (export "
                    "it, import it under a new id)"
                )
                for p in problems
            )


class TestExistingIds:
    def test_a_store_holding_an_id_no_longer_accepted_still_opens_and_reads_it(
        self, store_path: Path
    ) -> None:
        with Store(store_path) as s:
            make_legacy(s, "abc.")
        with Store(store_path) as s:
            assert s.session_ids() == ["abc."]
            assert [x.id for x in s.sessions()] == ["abc."]
            assert s.session("abc.").messages()[0].content == "still here"
            s.session("abc.").append("assistant", "and writable")
            assert "abc." in s
            issues = [(Path(i.path).name, i.problem) for i in s.check().issues]
            assert issues == [
                (
                    "abc.",
                    "session id 'abc.' ends with '.', which Windows drops from folder names: "
                    "the store is not portable",
                )
            ]
