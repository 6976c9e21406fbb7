"""Every refusal names what was wrong, and nothing is written when input is refused."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from convstore import (
    ConvstoreError,
    InvalidContent,
    InvalidDate,
    InvalidInput,
    InvalidRole,
    InvalidSessionId,
    Store,
)
from convstore.records import MAX_RECORD_BYTES


def snapshot(root: Path) -> dict[str, str]:
    """Hash of every file outside the local cache."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.parts
    }


def deep(n: int) -> Any:
    value: Any = "x"
    for _ in range(n):
        value = [value]
    return value


BAD_SESSION_IDS = [
    ("", "empty"),
    ("../escape", "not allowed"),
    ("a/b", "not allowed"),
    ("a\\b", "not allowed"),
    (".hidden", "not allowed"),
    ("a..b", "not allowed"),
    ("x" * 129, "the limit is 128"),
    ("CON", "reserved device name"),
    ("nul.txt", "reserved device name"),
    ("tab\there", "not allowed"),
    ("émoji🙂", "not allowed"),
]


class TestRefusals:
    @pytest.mark.parametrize(("sid", "message"), BAD_SESSION_IDS)
    def test_session_ids_that_could_escape_or_clash_are_refused(
        self, store: Store, sid: str, message: str
    ) -> None:
        before = snapshot(store.path)
        with pytest.raises(InvalidSessionId, match=message):
            store.create_session(sid)
        with pytest.raises(InvalidSessionId):
            store.session(sid)
        assert snapshot(store.path) == before

    @pytest.mark.parametrize(
        ("role", "content", "metadata", "error", "message"),
        [
            ("robot", "hi", None, InvalidRole, "role 'robot' is not one of system, developer"),
            ("user", 42, None, InvalidContent, "content must be a string or a list of parts"),
            ("user", [{"type": "video"}], None, InvalidContent, "has type 'video'"),
            ("user", [{"type": "text"}], None, InvalidContent, "needs 'text'"),
            ("user", [{"type": "image"}], None, InvalidContent, "needs a string 'url' or 'path'"),
            ("user", [{"type": "tool_call", "id": "1"}], None, InvalidContent, "needs 'name'"),
            ("user", "hi", {"x": float("nan")}, InvalidContent, "nan"),
            ("user", "hi", {"x": float("inf")}, InvalidContent, "inf"),
            ("user", "hi", {"x": {1, 2}}, InvalidContent, "holds a set"),
            ("user", "hi", {1: "x"}, InvalidContent, "keys must be strings"),
            ("user", "hi", {"x": deep(100)}, InvalidContent, "nested deeper than 64"),
            ("user", "hi", "not a dict", InvalidContent, "metadata must be a dict"),
            ("user", "lone \ud800 surrogate", None, InvalidContent, "lone surrogate"),
            ("user", "x" * (MAX_RECORD_BYTES + 1), None, InvalidContent, "over the 16,777,216"),
        ],
    )
    def test_bad_messages_are_refused_with_a_clear_reason_and_nothing_written(
        self,
        store: Store,
        role: Any,
        content: Any,
        metadata: Any,
        error: type[Exception],
        message: str,
    ) -> None:
        s = store.create_session("s")
        s.append("user", "before")
        before = snapshot(store.path)
        with pytest.raises(error, match=message):
            s.append(role, content, metadata=metadata)
        with pytest.raises(error, match=message):
            s.extend(
                [
                    {"role": "user", "content": "ok"},
                    {"role": role, "content": content, "metadata": metadata},
                ]
            )
        assert snapshot(store.path) == before
        assert [m.text for m in s.messages()] == ["before"]

    @pytest.mark.parametrize(
        ("call", "error", "message"),
        [
            (lambda s: s.messages(limit=-1), InvalidInput, "limit must be a non-negative"),
            (lambda s: s.recent(-3), InvalidInput, "n must be a non-negative"),
            (lambda s: s.messages(after="last tuesday"), InvalidDate, "cannot read 'last tuesday'"),
            (lambda s: s.store.sessions(since="2026-13-45"), InvalidDate, "not a real date"),
            (
                lambda s: s.store.sessions(since="2026-02-01", until="2026-01-01"),
                InvalidDate,
                "before since",
            ),
            (lambda s: s.update(), InvalidInput, "needs title= or metadata="),
            (lambda s: s.update(title=7), InvalidInput, "title must be a string"),
            (lambda s: s.put_checkpoint("", {}), InvalidInput, "checkpoint_id must be"),
            (lambda s: s.save_state({"x": float("nan")}), InvalidContent, "nan"),
            (lambda s: s.extend([{"role": "user"}]), InvalidInput, "needs 'role' and 'content'"),
            (
                lambda s: s.extend([{"role": "user", "content": "x", "rol": 1}]),
                InvalidInput,
                "unknown keys",
            ),
            (
                lambda s: s.append("user", "x", created_at="yesterday-ish"),
                InvalidDate,
                "not ISO-8601",
            ),
            (lambda s: s.store.merge(["s"]), InvalidInput, "at least two sessions"),
            (lambda s: s.branch(at="nope"), InvalidInput, "'nope' is not in session 's'"),
        ],
    )
    def test_bad_arguments_are_refused_by_name(
        self, store: Store, call: Any, error: type[Exception], message: str
    ) -> None:
        s = store.create_session("s")
        s.append("user", "x")
        before = snapshot(store.path)
        with pytest.raises(error, match=message):
            call(s)
        assert snapshot(store.path) == before

    def test_every_refusal_is_a_convstore_error(self) -> None:
        for cls in (InvalidContent, InvalidDate, InvalidRole, InvalidSessionId):
            assert issubclass(cls, ConvstoreError)

    def test_a_folder_that_is_not_a_store_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "notes.txt").write_text("mine")
        with pytest.raises(ConvstoreError, match="not a convstore store"):
            Store(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

    def test_a_store_from_a_newer_format_is_refused(self, store_path: Path) -> None:
        Store(store_path).close()
        (store_path / "convstore.json").write_text('{"format": "convstore", "version": 99}')
        with pytest.raises(ConvstoreError, match=r"format version 99.*Upgrade convstore"):
            Store(store_path)
