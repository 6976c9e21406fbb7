"""An OpenAI Agents SDK session kept in a convstore session.

``ConvstoreSession(session_id, store)`` implements the SDK's ``Session`` protocol
(``session_id``, ``session_settings``, ``get_items``, ``add_items``, ``pop_item``,
``clear_session``)::

    from agents import Agent, Runner
    from convstore import Store
    from convstore.integrations.openai_agents import ConvstoreSession

    session = ConvstoreSession("user/42", Store("chats"))
    await Runner.run(agent, "What did I ask yesterday?", session=session)

Behaviour matches the SDK's ``SQLiteSession``: ``get_items(limit)`` takes ``limit`` or else
``session_settings.limit``; ``None`` and negative limits return every item, ``0`` none, ``n``
the latest ``n`` in chronological order. ``pop_item`` removes and returns the newest item under
the session's lock, so two processes popping at once never get the same item.
``clear_session`` deletes every item and leaves the session usable.

Each item is one convstore message, so search and SQL see real text. The role is the item's
role (``user``, ``assistant``, ``system``, ``developer``), ``tool`` for the output of a tool call,
and ``assistant`` for what the model emits (function calls, reasoning...). The text moves into
the convstore content: a string ``content``, the ``text`` of ``input_text``/``output_text``
parts (as convstore text parts), a function call's ``arguments``, a tool's string ``output``.
The rest of the item sits in the metadata under ``openai_agents`` and the item is rebuilt from
both, equal to what was added. Items of any other shape are kept whole in the metadata, with
their text copied into the content for search.

Items must be JSON (as for ``SQLiteSession``); anything else raises ``InvalidContent`` and
nothing is written. The methods run the store's sync operations in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any, TypeGuard

from agents.memory.session_settings import SessionSettings, resolve_session_limit

from ..errors import InvalidContent
from ..records import ROLES, Message, check_metadata
from ..store import Store
from . import SessionBacked

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["ConvstoreSession"]

_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS = frozenset({"input_text", "output_text"})


class ConvstoreSession(SessionBacked):
    """OpenAI Agents SDK session stored as the messages of one convstore session."""

    source = "openai-agents"

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        store: Store | str | PathLike[str],
        *,
        session_settings: SessionSettings | None = None,
        user_id: str | None = None,
        org_id: str | None = None,
    ) -> None:
        """``user_id``/``org_id`` are recorded when this session creates the convstore one."""
        self.session_settings = (
            session_settings if session_settings is not None else SessionSettings()
        )
        self._bind(session_id, store, user_id, org_id)

    # -- the Session protocol ------------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The items, oldest first; with a positive limit, the latest ``limit`` of them."""
        effective = resolve_session_limit(limit, self.session_settings)
        return await asyncio.to_thread(self._get_items, effective)

    def _get_items(self, limit: int | None) -> list[TResponseInputItem]:
        session = self._session(create=False)
        if session is None or limit == 0:
            return []
        # SQLiteSession passes the limit to SQL's LIMIT, where a negative one means no limit.
        # The protocol's latest ``limit`` items, exactly (recent() may widen its window).
        messages = session._last(limit) if limit is not None and limit > 0 else session.messages()
        return [message_to_item(m) for m in messages]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append the items as one convstore frame: one lock, one write, one fsync."""
        if not items:
            return
        converted = []
        for i, item in enumerate(items):
            try:
                converted.append(item_to_message(item))
            except InvalidContent as e:
                raise InvalidContent(f"items[{i}]: {e}") from None
        await asyncio.to_thread(self._add, converted)

    def _add(self, converted: list[dict[str, Any]]) -> None:
        session = self._session(create=True)
        assert session is not None
        session.extend(converted)

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item, or None when the session is empty."""
        return await asyncio.to_thread(self._pop)

    def _pop(self) -> TResponseInputItem | None:
        session = self._session(create=False)
        if session is None:
            return None
        # Reading the newest item and deleting it must be one step: under the session lock,
        # another thread or process cannot pop (or append) in between.
        with self.store._locks.get(session.id):
            newest = session._last(1)
            if not newest:
                return None
            session.delete_message(newest[0].id)
        return message_to_item(newest[0])

    async def clear_session(self) -> None:
        """Delete every item (tombstones; compaction removes the bytes)."""
        await asyncio.to_thread(self._clear)

    def _clear(self) -> None:
        session = self._session(create=False)
        if session is None:
            return
        with self.store._locks.get(session.id):
            for m in session.messages():
                session.delete_message(m.id)


def item_to_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """The ``{role, content, metadata}`` convstore stores for an SDK input item."""
    if not isinstance(item, Mapping):
        raise InvalidContent(f"an item must be a dict, not {type(item).__name__}")
    rest = dict(item)
    kind = rest.get("type")
    role = rest.get("role")
    if role in _MESSAGE_ROLES:
        stored_role = str(role)
    elif isinstance(kind, str) and kind.endswith("_output"):
        stored_role = "tool"
    else:
        stored_role = "assistant"
    moved: str | None = None
    content: Any
    value = rest.get("content")
    if role in _MESSAGE_ROLES and isinstance(value, str):
        moved, content = "content", rest.pop("content")
    elif role in _MESSAGE_ROLES and _text_parts(value):
        moved = "parts"
        content = [{"type": "text", "text": p["text"]} for p in value]
        rest["content"] = [{k: v for k, v in p.items() if k != "text"} for p in value]
    elif kind == "function_call_output" and isinstance(rest.get("output"), str):
        moved, content = "output", rest.pop("output")
    elif kind == "function_call" and isinstance(rest.get("arguments"), str):
        moved, content = "arguments", rest.pop("arguments")
    else:
        content = _text(item)
    meta: dict[str, Any] = {"item": rest}
    if moved is not None:
        meta["text"] = moved
    assert stored_role in ROLES
    return {
        "role": stored_role,
        "content": content,
        "metadata": check_metadata({"openai_agents": meta}, "item"),
    }


def message_to_item(message: Message) -> TResponseInputItem:
    """The SDK input item a convstore message stands for."""
    meta = message.metadata.get("openai_agents")
    if isinstance(meta, dict) and isinstance(meta.get("item"), dict):
        item: dict[str, Any] = dict(meta["item"])
        moved = meta.get("text")
        if moved in ("content", "output", "arguments"):
            item[moved] = message.content if isinstance(message.content, str) else message.text
        elif moved == "parts":
            shapes = item.get("content")
            texts = (
                [p.get("text", "") for p in message.content]
                if isinstance(message.content, list)
                else [message.content]
            )
            if not isinstance(shapes, list) or len(shapes) != len(texts):
                # Edited in convstore into another shape: one text part holds the new text.
                first = shapes[0] if isinstance(shapes, list) and shapes else {}
                shapes, texts = [first or {"type": "input_text"}], [message.text]
            item["content"] = [
                {**shape, "text": text} for shape, text in zip(shapes, texts, strict=True)
            ]
        return item  # type: ignore[return-value]
    # A message other code appended: the plain item of its role.
    if message.role == "tool":
        call_id = message.metadata.get("tool_call_id")
        if isinstance(call_id, str):
            return {"type": "function_call_output", "call_id": call_id, "output": message.text}
        return {"role": "user", "content": message.text}
    plain: Any = {"role": message.role, "content": message.text}
    return plain  # type: ignore[no-any-return]


def _text_parts(value: Any) -> TypeGuard[list[dict[str, Any]]]:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(p, dict) and p.get("type") in _TEXT_PARTS and isinstance(p.get("text"), str)
            for p in value
        )
    )


def _text(value: Any) -> str:
    """Every string under a ``text``, ``output`` or ``arguments`` key, for search."""
    pieces: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for key in ("text", "output", "arguments", "content", "summary"):
                inner = v.get(key)
                if isinstance(inner, str) and key != "content":
                    pieces.append(inner)
                elif isinstance(inner, (list, dict)):
                    stack.append(inner)
        elif isinstance(v, list):
            stack.extend(reversed(v))
    return "\n".join(pieces)
