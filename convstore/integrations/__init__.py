"""Adapters for agent frameworks, each in its own module and behind its own extra.

========================================= ===================================== ===============
module                                    class                                 extra
========================================= ===================================== ===============
``convstore.integrations.langgraph``      ``ConvstoreSaver`` (checkpointer)     ``langgraph``
``convstore.integrations.langchain``      ``ConvstoreChatMessageHistory``       ``langchain``
``convstore.integrations.openai_agents``  ``ConvstoreSession``                  ``openai-agents``
========================================= ===================================== ===============

This package imports no framework; only the module you import pulls its framework in.

Frameworks name conversations with any string (``"user/42"``, a UUID, an e-mail address), while a
convstore session id is one folder name. :func:`session_id_for` maps one to the other, the same
way for every adapter, so ``"user/42"`` is the same session whichever framework wrote it:

- an id that is already a valid session id is used as it is (``"thread-1"`` -> ``"thread-1"``),
  unless it starts with the reserved prefix ``ext-`` (in any case);
- any other id is escaped, reversibly: ``"ext-e-"`` followed by the id with every character other
  than an ASCII letter, digit or ``-`` written as ``_`` and two hex digits per UTF-8 byte
  (``"user/42"`` -> ``"ext-e-user_2f42"``, ``"../x"`` -> ``"ext-e-_2e_2e_2fx"``);
- an id whose escaped form would pass the 128-character limit becomes ``"ext-h-"`` and 32 hex
  digits of its SHA-256. That form cannot be decoded, so adapters keep the original id in the
  session's metadata (``external_id``), where :func:`external_id_for` finds it.

The mapping is injective: two different external ids never share a session.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidInput, InvalidSessionId, SessionExists, SessionNotFound
from ..ids import SESSION_ID_MAX, validate_session_id

if TYPE_CHECKING:
    from ..session import Session
    from ..store import Store

__all__ = ["SessionBacked", "external_id_for", "open_session", "session_id_for"]

RESERVED_PREFIX = "ext-"
_ESCAPED = "ext-e-"
_HASHED = "ext-h-"
_KEEP = re.compile(r"[A-Za-z0-9-]")
_ESCAPE = re.compile(r"_([0-9a-f]{2})")


def session_id_for(external_id: str) -> str:
    """The convstore session id that stands for a framework's conversation id."""
    if not isinstance(external_id, str):
        raise InvalidInput(
            f"a conversation id must be a string, not {type(external_id).__name__}; "
            "convert it with str() first"
        )
    if not external_id.lower().startswith(RESERVED_PREFIX):
        try:
            return validate_session_id(external_id)
        except InvalidSessionId:
            pass
    try:
        raw = external_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"conversation id {external_id!r:.60} holds a lone surrogate; it is not valid Unicode"
        ) from None
    escaped = _ESCAPED + "".join(chr(b) if _KEEP.fullmatch(chr(b)) else f"_{b:02x}" for b in raw)
    if len(escaped) <= SESSION_ID_MAX:
        return escaped
    return _HASHED + hashlib.sha256(raw).hexdigest()[:32]


def external_id_for(session_id: str, metadata: Mapping[str, Any] | None = None) -> str | None:
    """The framework's id of a session made by :func:`session_id_for`, or None if unknown.

    ``metadata`` is the session's metadata; it is needed only for the hashed form.
    """
    if session_id.startswith(_ESCAPED):
        return _unescape(session_id[len(_ESCAPED) :])
    if session_id.startswith(_HASHED):
        found = (metadata or {}).get("external_id")
        return found if isinstance(found, str) and session_id_for(found) == session_id else None
    return session_id


def _unescape(text: str) -> str | None:
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "_":
            m = _ESCAPE.match(text, i)
            if m is None:
                return None
            out.append(int(m.group(1), 16))
            i += 3
        elif _KEEP.fullmatch(ch):
            out.append(ord(ch))
            i += 1
        else:
            return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


def open_session(
    store: Store,
    external_id: str,
    *,
    create: bool,
    source: str,
    title: str | None = None,
    user_id: str | None = None,
    org_id: str | None = None,
) -> Session | None:
    """The session of a framework's conversation id, made on first use when ``create``.

    Two writers may make it at once: the loser of that race opens the winner's. A session
    deleted with convstore is never made again (deleted ids are not reused), which is refused
    with a message saying to pick another id.
    """
    sid = session_id_for(external_id)
    try:
        return store.session(sid)
    except SessionNotFound:
        if not create:
            return None
    try:
        return store.create_session(
            sid,
            title=title,
            user_id=user_id,
            org_id=org_id,
            metadata={"source": source, "external_id": external_id},
        )
    except SessionExists:
        pass  # another writer made it first, or it was deleted
    try:
        return store.session(sid)
    except SessionNotFound:
        raise SessionExists(
            f"{source} id {external_id!r} is stored as session {sid!r}, which was deleted with "
            "convstore; deleted session ids are never reused, so use another id"
        ) from None


class SessionBacked:
    """What the LangChain history and the Agents session share: one conversation id kept as
    one convstore session, in a store they were given or opened from a path."""

    source: ClassVar[str]
    session_id: str
    store: Store

    def _bind(
        self,
        session_id: str,
        store: Store | str | PathLike[str],
        user_id: str | None,
        org_id: str | None,
    ) -> None:
        from ..store import Store

        self.session_id = session_id
        self._owns_store = not isinstance(store, Store)
        self.store = store if isinstance(store, Store) else Store(store)
        self._sid = session_id_for(session_id)
        self._user_id = user_id
        self._org_id = org_id

    def close(self) -> None:
        """Close the store if this object opened it from a path."""
        if self._owns_store:
            self.store.close()

    def _session(self, *, create: bool) -> Session | None:
        return open_session(
            self.store,
            self.session_id,
            create=create,
            source=self.source,
            user_id=self._user_id,
            org_id=self._org_id,
        )
