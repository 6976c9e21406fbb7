"""Hostile input beyond tests/test_bad_input.py: every public entry refuses it clearly.

test_bad_input.py covers the session-id table, bad roles and content, NaN/infinity and deep
nesting in message metadata, a lone surrogate in message text and the size limit on a message.
This file adds the other places the same hostile values can enter (ids of branches, merges and
messages, titles, state, checkpoints, pending writes, tool-call arguments, edits), bytes where
text is expected, cyclic values, nesting right at the limit, and malformed import files. Each
is refused with a ConvstoreError that names the problem, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from convstore import (
    ConvstoreError,
    ImportFormatError,
    InvalidContent,
    InvalidInput,
    InvalidSessionId,
    MessageNotFound,
    Session,
    Store,
)
from convstore.records import MAX_DEPTH, MAX_RECORD_BYTES

from .conftest import ROOT, run_python

OVER = MAX_RECORD_BYTES + 10


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file of the store's truth (the local cache left out)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def nested(depth: int) -> Any:
    """A value whose innermost string sits ``depth`` containers deep."""
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def nested_parts(depth: int) -> list[dict[str, Any]]:
    """Message content of tool results nested ``depth`` times."""
    part: dict[str, Any] = {"type": "text", "text": "x"}
    for i in range(depth):
        part = {"type": "tool_result", "tool_call_id": str(i), "content": [part]}
    return [part]


def cyclic_list() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def cyclic_dict() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


@pytest.fixture
def session(store: Store) -> Session:
    s = store.create_session("s", title="a session")
    s.append("user", "before")
    s.put_checkpoint("cp0", {"messages": ["before"]})
    return s


Call = Callable[[Session], object]

REFUSED: list[tuple[str, Call, type[ConvstoreError], str]] = [
    # ids that could escape the folder, wherever an id is given
    ("a branch id", lambda s: s.branch(branch_id="../x"), InvalidSessionId, "not allowed"),
    (
        "a merge id",
        lambda s: s.store.merge(["s", "s"], session_id="/etc/x"),
        InvalidSessionId,
        "not allowed",
    ),
    ("an id with NUL", lambda s: s.store.create_session("a\x00b"), InvalidSessionId, "not allowed"),
    ("an id in bytes", lambda s: s.store.create_session(b"ab"), InvalidSessionId, "not bytes"),  # type: ignore[arg-type]
    ("a fullwidth slash", lambda s: s.store.session("a\uff0fb"), InvalidSessionId, "not allowed"),
    ("an id of None", lambda s: s.store.session(None), InvalidSessionId, "NoneType"),  # type: ignore[arg-type]
    ("a message path", lambda s: s.get("../../etc/passwd"), MessageNotFound, "no message"),
    ("an edit path", lambda s: s.edit("../x", "y"), MessageNotFound, "no message '../x'"),
    ("a huge message id", lambda s: s.delete_message("x" * 100_000), MessageNotFound, "no message"),
    # bytes where text is expected: invalid UTF-8 never reaches a file
    ("bytes as content", lambda s: s.append("user", b"\xff\xfe"), InvalidContent, "not bytes"),  # type: ignore[arg-type]
    (
        "bytes in metadata",
        lambda s: s.append("user", "x", metadata={"a": b"\xff"}),
        InvalidContent,
        "holds a bytes",
    ),
    ("bytes as a title", lambda s: s.update(title=b"x"), InvalidInput, "title must be a string"),  # type: ignore[arg-type]
    ("bytes in state", lambda s: s.save_state({"k": b"\x80"}), InvalidContent, "holds a bytes"),
    # lone surrogates, wherever text goes
    ("a surrogate title", lambda s: s.update(title="a\ud800"), InvalidInput, "lone surrogate"),
    (
        "a surrogate metadata key",
        lambda s: s.append("user", "x", metadata={"a\udc00": 1}),
        InvalidContent,
        "lone surrogate",
    ),
    ("a surrogate edit", lambda s: s.edit(first_id(s), "bad \ud800"), InvalidContent, "surrogate"),
    ("a surrogate in state", lambda s: s.save_state({"k": "\ud800"}), InvalidContent, "surrogate"),
    ("a surrogate state key", lambda s: s.save_state({"\ud800": 1}), InvalidContent, "surrogate"),
    (
        "a surrogate in a checkpoint",
        lambda s: s.put_checkpoint("c1", {"k": "\udfff"}),
        InvalidContent,
        "surrogate",
    ),
    (
        "a surrogate user id",
        lambda s: s.store.create_session("u", user_id="\ud800"),
        InvalidInput,
        "lone surrogate",
    ),
    # NaN and infinity beyond message metadata
    (
        "NaN in checkpoint metadata",
        lambda s: s.put_checkpoint("c1", {}, metadata={"x": float("nan")}),
        InvalidContent,
        "nan",
    ),
    (
        "-inf in checkpoint state",
        lambda s: s.put_checkpoint("c1", {"x": float("-inf")}),
        InvalidContent,
        "-inf",
    ),
    (
        "NaN in pending writes",
        lambda s: s.put_writes("cp0", "t", [("ch", float("nan"))]),
        InvalidContent,
        "nan",
    ),
    (
        "NaN in session metadata",
        lambda s: s.update(metadata={"x": [1, float("nan")]}),
        InvalidContent,
        "nan",
    ),
    (
        "inf in tool-call arguments",
        lambda s: s.append(
            "assistant",
            [{"type": "tool_call", "id": "1", "name": "f", "arguments": {"x": float("inf")}}],
        ),
        InvalidContent,
        "inf",
    ),
    # nesting: cycles, the limit, and nesting through message parts
    (
        "a cyclic list",
        lambda s: s.append("user", "x", metadata={"c": cyclic_list()}),
        InvalidContent,
        f"deeper than {MAX_DEPTH}",
    ),
    ("a cyclic state", lambda s: s.save_state(cyclic_dict()), InvalidContent, "deeper than"),
    (
        "metadata one level too deep",
        lambda s: s.append("user", "x", metadata={"d": nested(MAX_DEPTH + 1)}),
        InvalidContent,
        f"deeper than {MAX_DEPTH}",
    ),
    (
        "tool results nested 200 deep",
        lambda s: s.append("tool", nested_parts(200)),
        InvalidContent,
        "deeper than",
    ),
    (
        "tool results nested 5000 deep",
        lambda s: s.append("tool", nested_parts(5000)),
        InvalidContent,
        "deeper than",
    ),
    ("a state 10,000 deep", lambda s: s.save_state(nested(10_000)), InvalidContent, "deeper than"),
    # over the documented size limit, wherever a record is made
    (
        "huge metadata",
        lambda s: s.append("user", "x", metadata={"b": "y" * OVER}),
        InvalidContent,
        "over the 16,777,216-byte limit",
    ),
    ("a huge edit", lambda s: s.edit(first_id(s), "y" * OVER), InvalidContent, "byte limit"),
    ("a huge state", lambda s: s.save_state({"k": "y" * OVER}), InvalidContent, "byte limit"),
    (
        "a huge checkpoint",
        lambda s: s.put_checkpoint("big", {"k": "y" * OVER}),
        InvalidContent,
        "byte limit",
    ),
    (
        "a huge pending write",
        lambda s: s.put_writes("cp0", "t", [("ch", "y" * OVER)]),
        InvalidContent,
        "byte limit",
    ),
    (
        "huge tool-call arguments",
        lambda s: s.append(
            "assistant", [{"type": "tool_call", "id": "1", "name": "f", "arguments": "a" * OVER}]
        ),
        InvalidContent,
        "byte limit",
    ),
    (
        "one huge message in a batch",
        lambda s: s.extend(
            [{"role": "user", "content": "ok"}, {"role": "user", "content": "z" * OVER}]
        ),
        InvalidContent,
        "byte limit",
    ),
    ("a huge title", lambda s: s.update(title="t" * 1001), InvalidInput, "at most 1000"),
    (
        "an integer JSON cannot hold",
        lambda s: s.append("user", "x", metadata={"big": 10**30}),
        InvalidContent,
        "64-bit",
    ),
    (
        "a date before year 1000",
        lambda s: s.append("user", "x", created_at="0001-01-01T00:00:00Z"),
        InvalidInput,
        "0001-01-01",
    ),
]


def first_id(s: Session) -> str:
    return s.messages()[0].id


# Known defects, each reported with its reproduction; strict, so each turns red once fixed.
KNOWN: dict[str, pytest.MarkDecorator] = {}  # cases refused wrongly today: none


class TestRefusedEverywhere:
    @pytest.mark.parametrize(
        ("call", "error", "message"),
        [pytest.param(c, e, m, id=name, marks=KNOWN.get(name, ())) for name, c, e, m in REFUSED],
    )
    def test_hostile_values_are_refused_by_name_and_nothing_is_written(
        self, session: Session, call: Call, error: type[ConvstoreError], message: str
    ) -> None:
        before = snapshot(session.store.path)
        with pytest.raises(error, match=message):
            call(session)
        assert snapshot(session.store.path) == before
        assert [m.text for m in session.messages()] == ["before"]
        assert session.title == "a session"

    def test_nothing_is_created_outside_the_store_by_ids_that_look_like_paths(
        self, session: Session, tmp_path: Path
    ) -> None:
        outside = {p for p in tmp_path.rglob("*") if session.store.path not in p.parents}
        session.put_checkpoint("../../cp", {"x": 1}, namespace="../../ns")
        session.put_writes("../../cp", "../t", [("../ch", 1)], namespace="../../ns")
        for bad in ("../x", "/abs", "a/b"):
            with pytest.raises(InvalidSessionId):
                session.store.create_session(bad)
        assert {p for p in tmp_path.rglob("*") if session.store.path not in p.parents} == outside
        assert session.get_checkpoint("../../cp", namespace="../../ns").state == {"x": 1}


class TestRightAtTheLimits:
    def test_metadata_nested_exactly_to_the_limit_is_stored_and_reads_back_everywhere(
        self, store_path: Path
    ) -> None:
        deep = {"d": nested(MAX_DEPTH - 1)}
        with Store(store_path) as st:
            st.create_session("s").append("user", "deep", metadata=deep)
        with Store(store_path) as st:
            assert st.session("s").messages()[0].metadata == deep
            assert st.check().ok

    def test_a_message_just_under_the_size_limit_is_stored_and_survives_compaction(
        self, store_path: Path
    ) -> None:
        pytest.importorskip("convstore.compaction")
        text = "z" * (MAX_RECORD_BYTES - 500)
        with Store(store_path) as st:
            st.create_session("s").append("user", text)
            st.compact()
        with Store(store_path) as st:
            assert st.session("s").messages()[0].text == text
            assert st.check().ok


CHATGPT_ONE: list[dict[str, Any]] = [
    {
        "id": "conv-1",
        "title": "t",
        "create_time": 1_700_000_000,
        "current_node": "b",
        "mapping": {
            "a": {"id": "a", "message": None, "parent": None, "children": ["b"]},
            "b": {
                "id": "b",
                "parent": "a",
                "children": [],
                "message": {
                    "id": "b",
                    "author": {"role": "user"},
                    "create_time": 1_700_000_000,
                    "content": {"content_type": "text", "parts": ["hi"]},
                },
            },
        },
    }
]


def chatgpt(**changes: Any) -> bytes:
    doc = json.loads(json.dumps(CHATGPT_ONE))
    for path, value in changes.items():
        target = doc[0]
        *parents, last = path.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return json.dumps(doc).encode()


MALFORMED_IMPORTS: list[tuple[str, str, bytes, str]] = [
    ("nested 100,000 deep", "deep.json", b"[" * 100_000 + b"]" * 100_000, "depth limit"),
    ("a NaN literal", "nan.json", b'[{"role": "user", "content": NaN}]', "not valid JSON"),
    ("invalid UTF-8", "bad.json", b'[{"role": "user", "content": "\xff\xfe"}]', "not valid"),
    ("a lone surrogate escape", "sur.json", b'[{"role":"user","content":"\\ud800"}]', "surrogate"),
    ("an empty file", "empty.json", b"", "not valid JSON"),
    ("a bare number", "n.json", b"42", "cannot tell which export"),
    ("random bytes", "noise.bin", bytes(range(256)) * 8, "not valid JSON"),
    ("random bytes as JSONL", "noise.jsonl", bytes(range(256)) * 8, "not valid JSON"),
    (
        "a number that overflows",
        "inf.json",
        b'[{"role": "user", "content": "hi", "created_at": 1e400}]',
        "infinity",
    ),
    (
        "a time far beyond year 9999",
        "late.json",
        chatgpt(mapping__b__message__create_time=1e300),
        "not a time",
    ),
    (
        "a time before 1970",
        "early.json",
        chatgpt(mapping__b__message__create_time=-1e18),
        "not a time",
    ),
    (
        "a message over the size limit",
        "big.json",
        chatgpt(mapping__b__message__content={"content_type": "text", "parts": ["x" * OVER]}),
        "byte limit",
    ),
    (
        "a convstore export with a path as session id",
        "export.json",
        json.dumps(
            {
                "format": "convstore-export",
                "version": 1,
                "sessions": [{"id": "../../evil", "messages": []}],
            }
        ).encode(),
        "not allowed",
    ),
]


class TestMalformedImports:
    @pytest.fixture(autouse=True)
    def _importers(self) -> None:
        pytest.importorskip("convstore.importers")

    @pytest.mark.parametrize(
        ("name", "data", "message"),
        [pytest.param(n, d, m, id=label) for label, n, d, m in MALFORMED_IMPORTS],
    )
    def test_a_hostile_file_is_refused_with_a_reason_and_nothing_is_written(
        self, store: Store, tmp_path: Path, name: str, data: bytes, message: str
    ) -> None:
        from convstore.importers import import_files

        path = tmp_path / name
        path.write_bytes(data)
        before = snapshot(store.path)
        with pytest.raises(ImportFormatError, match=message) as info:
            import_files(store, [path])
        assert str(info.value).startswith(str(path))
        assert snapshot(store.path) == before
        assert store.session_ids() == []

    def test_a_folder_or_a_broken_zip_given_as_a_file_is_refused(
        self, store: Store, tmp_path: Path
    ) -> None:
        from convstore.importers import import_files

        folder = tmp_path / "folder.json"
        folder.mkdir()
        archive = tmp_path / "export.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("conversations.json", b"\x00\x01 not json")
        for bad in (folder, archive):
            with pytest.raises(ImportFormatError):
                import_files(store, [bad])
        assert store.session_ids() == []

    def test_ids_from_an_export_never_name_a_folder_outside_the_store(
        self, store: Store, tmp_path: Path
    ) -> None:
        from convstore.importers import import_files

        claude = [
            {
                "uuid": "../../outside",
                "name": "n",
                "created_at": "2024-01-01T00:00:00Z",
                "chat_messages": [
                    {
                        "uuid": "../m1",
                        "sender": "human",
                        "text": "hi",
                        "created_at": "2024-01-01T00:00:00Z",
                    }
                ],
            }
        ]
        path = tmp_path / "conversations.json"
        path.write_text(json.dumps(claude), "utf-8")
        before = set(os.listdir(tmp_path))
        import_files(store, [path])
        assert set(os.listdir(tmp_path)) == before
        for sid in store.session_ids():
            assert (store.path / "sessions" / sid).resolve().parent == (
                store.path / "sessions"
            ).resolve()


class TestCommandLine:
    @pytest.mark.parametrize(
        "args",
        [
            ["show", "../../etc"],
            ["show", "a/b"],
            ["rm", "../x"],
            ["new", "--id", "../x"],
            ["show", "s", "--since", "last tuesday-ish"],
        ],
        ids=lambda a: " ".join(a),
    )
    def test_hostile_arguments_get_a_one_line_error_and_no_traceback(
        self, store: Store, args: list[str]
    ) -> None:
        pytest.importorskip("convstore.cli")
        store.create_session("s").append("user", "x")
        before = snapshot(store.path)
        code = "import sys; from convstore.cli import main; sys.argv[0] = 'convstore'; main()"
        out = run_python(code, "--store", str(store.path), *args)
        assert out.returncode != 0
        assert "Traceback" not in out.stderr and "internal error" not in out.stderr
        assert out.stderr.strip(), "the refusal says nothing"
        assert snapshot(store.path) == before
        assert ROOT.exists()
