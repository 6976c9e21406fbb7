"""A LangChain chat message history kept in a convstore session.

``ConvstoreChatMessageHistory(session_id, store)`` implements ``BaseChatMessageHistory``::

    from convstore import Store
    from convstore.integrations.langchain import ConvstoreChatMessageHistory

    history = ConvstoreChatMessageHistory("user/42", Store("chats"))
    history.add_messages([HumanMessage("hi"), AIMessage("hello")])   # one append, one fsync
    history.messages                                                  # [HumanMessage, AIMessage]

Each LangChain message is one convstore message, so search, SQL, export and retention see
real text:

- the role is ``user`` (human), ``assistant`` (ai), ``system``, ``tool`` (tool and function),
  or a ``ChatMessage``'s own role when it is a convstore role (else ``user``);
- the content is the message's content: a string, or a list of content blocks when every block
  is a valid convstore part (``text``, ``image`` with a url...). Any other list is kept
  verbatim in the metadata and the convstore content is its text, so search still finds it;
- everything else ``message_to_dict`` gives (tool calls, ids, names, ``additional_kwargs``,
  ``response_metadata``, a tool message's ``tool_call_id``, ``status`` and ``artifact``...) goes
  in the message's metadata under ``langchain``, without its empty defaults, and comes back
  through ``messages_from_dict``. Metadata must be JSON: a tool artifact that is not is refused
  with ``InvalidContent`` and nothing is written.

Messages that other code appended to the session (``Session.append``, an import) read back as
the LangChain message of their role. ``session_id`` may be any string; see
``convstore.integrations`` for how it names a session. The async methods run the sync ones in a
worker thread, since each one reads or appends files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from os import PathLike
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

from ..errors import InvalidContent
from ..records import ROLES, Message, check_content, check_metadata, content_text
from ..store import Store
from . import SessionBacked

__all__ = ["ConvstoreChatMessageHistory"]

_ROLE_OF_TYPE = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "HumanMessageChunk": "user",
    "AIMessageChunk": "assistant",
    "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool",
    "FunctionMessageChunk": "tool",
}
# Fields message_to_dict always writes; when empty they are LangChain's defaults and are left
# out (most messages have no tool calls, names or ids), which messages_from_dict restores.
_DEFAULT_EMPTY: dict[str, Any] = {
    "additional_kwargs": {},
    "response_metadata": {},
    "name": None,
    "id": None,
    "tool_calls": [],
    "invalid_tool_calls": [],
    "usage_metadata": None,
    "artifact": None,
    "example": False,
}


class ConvstoreChatMessageHistory(SessionBacked, BaseChatMessageHistory):
    """LangChain chat history stored as the messages of one convstore session."""

    source = "langchain"

    def __init__(
        self,
        session_id: str,
        store: Store | str | PathLike[str],
        *,
        user_id: str | None = None,
        org_id: str | None = None,
    ) -> None:
        """``user_id``/``org_id`` are recorded when this history creates the session."""
        super().__init__()
        self._bind(session_id, store, user_id, org_id)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The messages, oldest first."""
        session = self._session(create=False)
        return [] if session is None else [from_convstore(m) for m in session.messages()]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append all ``messages`` as one convstore frame: one lock, one write, one fsync."""
        items = []
        for i, message in enumerate(messages):
            try:
                items.append(to_convstore(message))
            except InvalidContent as e:
                raise InvalidContent(f"messages[{i}] ({message.type}): {e}") from None
        if not items:
            return
        session = self._session(create=True)
        assert session is not None
        session.extend(items)

    def clear(self) -> None:
        """Delete every message of the session (tombstones; compaction removes the bytes)."""
        session = self._session(create=False)
        if session is not None:
            for m in session.messages():
                session.delete_message(m.id)

    async def aget_messages(self) -> list[BaseMessage]:
        return await asyncio.to_thread(lambda: self.messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await asyncio.to_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)


def to_convstore(message: BaseMessage) -> dict[str, Any]:
    """The ``{role, content, metadata}`` convstore stores for a LangChain message."""
    as_dict = message_to_dict(message)
    data = {
        k: v
        for k, v in as_dict["data"].items()
        if k != "type" and not (k in _DEFAULT_EMPTY and v == _DEFAULT_EMPTY[k])
    }
    content = data.pop("content", "")
    role = _ROLE_OF_TYPE.get(message.type)
    if role is None:
        chat_role = getattr(message, "role", None)
        role = chat_role if chat_role in ROLES else "user"
    stored: Any = content
    if not isinstance(content, str):
        try:
            stored = check_content(content)
        except InvalidContent:
            data["content"] = content  # kept verbatim; convstore gets its text
            stored = _text_of(content)
    metadata = check_metadata({"langchain": {"type": as_dict["type"], "data": data}})
    return {"role": role, "content": stored, "metadata": metadata}


def from_convstore(message: Message) -> BaseMessage:
    """The LangChain message a convstore message stands for."""
    lc = message.metadata.get("langchain")
    if (
        isinstance(lc, dict)
        and isinstance(lc.get("type"), str)
        and isinstance(lc.get("data"), dict)
    ):
        data = {"content": message.content, **lc["data"]}
        return messages_from_dict([{"type": lc["type"], "data": data}])[0]
    content: Any = message.content
    if message.role == "assistant":
        return AIMessage(content=content, id=message.id)
    if message.role == "system":
        return SystemMessage(content=content, id=message.id)
    if message.role == "developer":
        return ChatMessage(content=content, role="developer", id=message.id)
    if message.role == "tool":
        call_id = message.metadata.get("tool_call_id")
        if not isinstance(call_id, str) and isinstance(content, list):
            call_id = next((p.get("tool_call_id") for p in content if "tool_call_id" in p), None)
        return ToolMessage(content=content, tool_call_id=call_id or "", id=message.id)
    return HumanMessage(content=content, id=message.id)


def _text_of(content: Any) -> str:
    if not isinstance(content, list):
        return str(content)
    pieces = []
    for block in content:
        if isinstance(block, str):
            pieces.append(block)
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            pieces.append(block["text"])
        elif isinstance(block, dict) and block.get("type") in ("tool_call", "tool_result"):
            pieces.append(content_text([block]))
    return "\n".join(pieces)
