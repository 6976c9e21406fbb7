"""The record schema: what one line of a segment holds, and how it is checked and encoded.

Records are events. Reading a session replays them into its current view (``view.py``):

========== ==================================================================
kind       fields beyond ``id``, ``kind``, ``session``, ``created_at``
========== ==================================================================
session    any of ``title``, ``user_id``, ``org_id``, ``agent_id``,
           ``metadata``, ``parent`` ({session, message}) -- last writer wins
           per field
message    ``role``, ``content``, ``metadata``
edit       ``target`` (message id), ``content``
delete     ``target`` (message id) -- a tombstone
drop       (none) -- the session itself is deleted
blob       ``hash``, ``data`` -- a content-addressed JSON value
state      ``value`` (blob hash) or ``parts`` ({key: blob hash})
checkpoint ``checkpoint_id``, ``namespace``, ``parent_id``, ``metadata``,
           ``value`` or ``parts``
cp_delete  ``namespace``, ``checkpoint_ids`` (list, or null for all)
cp_writes  ``checkpoint_id``, ``namespace``, ``task_id``, ``task_path``,
           ``writes`` ([[channel, blob hash], ...])
========== ==================================================================

docs/FORMAT.md is the contract; keep the two in step.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, NoReturn

import orjson

from .errors import InvalidContent, InvalidInput, InvalidRole
from .ids import from_us, parse_us, validate_session_id

ROLES = ("system", "developer", "user", "assistant", "tool")
_ROLE_OF: dict[object, str] = {r: r for r in ROLES}  # a str Enum member finds its value
PART_TYPES = ("text", "image", "tool_call", "tool_result")
KINDS = (
    "session",
    "message",
    "edit",
    "delete",
    "drop",
    "blob",
    "state",
    "checkpoint",
    "cp_delete",
    "cp_writes",
)
# A single message (its encoded record) may be at most this large. Bigger payloads belong in
# files referenced from the message (an image part's url), not in the conversation log.
MAX_RECORD_BYTES = 16 * 1024 * 1024
# Nesting deeper than this is refused: JSON parsers (Python's, DuckDB's) have recursion limits,
# and a record that cannot be read back must never be written.
MAX_DEPTH = 64

Content = str | list[dict[str, Any]]
JSONDict = dict[str, Any]

# orjson, not the json module: it encodes a message record 20x faster (0.2 us against 4.6 us
# measured here), which is most of the CPU an append spends. It refuses lone surrogates as we
# want; NaN and infinity, which it would turn into null, are refused earlier by check_json.
_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE
_EXACT_ONLY = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a session, as the current view shows it (edits applied).

    Messages are shared with the session's in-memory view: the ones ``append``, ``extend``,
    ``get``, ``messages`` and ``recent`` return are the view's own, not copies (copying every
    read would cost more than the read). Treat ``content`` and ``metadata`` as read-only;
    change a message with ``Session.edit``. Changing them in place changes what this process
    shows until the session is read again, never what is stored.
    """

    id: str
    session_id: str
    role: str
    content: Content
    metadata: JSONDict
    created_at: datetime
    edited_at: datetime | None = None

    @property
    def text(self) -> str:
        """The message's text: the string content, or its text-bearing parts joined."""
        return content_text(self.content)

    def to_dict(self) -> JSONDict:
        from .ids import format_us, to_us

        return {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "metadata": self.metadata,
            "created_at": format_us(to_us(self.created_at)),
            "edited_at": None if self.edited_at is None else format_us(to_us(self.edited_at)),
        }


# The frozen dataclass's __init__ sets each field with object.__setattr__ (0.8 us a Message
# here); reads and appends build one per message, so they set the slots directly (0.45 us).
_SLOTS = tuple(
    getattr(Message, f).__set__
    for f in ("id", "session_id", "role", "content", "metadata", "created_at", "edited_at")
)


def make_message(
    mid: str,
    session_id: str,
    role: str,
    content: Content,
    metadata: JSONDict,
    created_at: datetime,
    edited_at: datetime | None = None,
    _new: Any = object.__new__,
    _slots: tuple[Any, ...] = _SLOTS,
) -> Message:
    """``Message(...)``, faster: what the dataclass's ``__init__`` does, without its calls."""
    m: Message = _new(Message)
    s_id, s_session, s_role, s_content, s_metadata, s_created, s_edited = _slots
    s_id(m, mid)
    s_session(m, session_id)
    s_role(m, role)
    s_content(m, content)
    s_metadata(m, metadata)
    s_created(m, created_at)
    s_edited(m, edited_at)
    return m


def content_text(content: Content) -> str:
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            pieces.append(str(part.get("text", "")))
        elif kind == "tool_call":
            args = part.get("arguments")
            pieces.append(
                f"{part.get('name', '')}({encode_json(args) if args is not None else ''})"
            )
        elif kind == "tool_result":
            inner = part.get("content")
            if isinstance(inner, str):
                pieces.append(inner)
            elif isinstance(inner, list):
                pieces.append(content_text(inner))
    return "\n".join(pieces)


def check_role(role: object) -> str:
    """The role as the plain string it is stored as (a str Enum member gives its value)."""
    try:
        canonical = _ROLE_OF.get(role)
    except TypeError:  # unhashable
        canonical = None
    if canonical is None or not isinstance(role, str):
        raise InvalidRole(f"role {role!r} is not one of {', '.join(ROLES)}")
    return canonical


def check_content(content: object) -> Content:
    """Validate message content: a string, or a list of typed parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidContent(
            f"content must be a string or a list of parts, not {type(content).__name__}"
        )
    check_json(content, "content")  # first: it bounds the depth _check_part recurses into
    for i, part in enumerate(content):
        _check_part(part, f"content[{i}]")
    return content


def _check_part(part: object, where: str) -> None:
    if not isinstance(part, dict):
        raise InvalidContent(f"{where} must be an object with a 'type', not {type(part).__name__}")
    kind = part.get("type")
    required: tuple[tuple[str, type | tuple[type, ...]], ...]
    if kind == "text":
        required = (("text", str),)
    elif kind == "image":
        if not isinstance(part.get("url"), str) and not isinstance(part.get("path"), str):
            raise InvalidContent(f"{where} is an image part and needs a string 'url' or 'path'")
        required = ()
    elif kind == "tool_call":
        required = (("id", str), ("name", str))
    elif kind == "tool_result":
        required = (("tool_call_id", str), ("content", (str, list)))
    else:
        raise InvalidContent(
            f"{where} has type {kind!r}; the part types are {', '.join(PART_TYPES)}"
        )
    for key, typ in required:
        if not isinstance(part.get(key), typ):
            raise InvalidContent(f"{where} is a {kind} part and needs {key!r} of the right type")
    if kind == "tool_result" and isinstance(part["content"], list):
        for j, inner in enumerate(part["content"]):
            _check_part(inner, f"{where}.content[{j}]")


def check_metadata(metadata: object, what: str = "metadata") -> JSONDict:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidContent(f"{what} must be a dict, not {type(metadata).__name__}")
    out = dict(metadata)
    for key in out:
        if not isinstance(key, str):
            raise InvalidContent(f"{what} keys must be strings; {key!r} is not")
    check_json(out, what)
    return out


def check_json(value: object, what: str) -> None:
    """Refuse what JSON cannot carry faithfully: NaN/inf, non-str keys, deep nesting, odd types."""
    _walk(value, 0, what)


_JSON_TYPES = (str, bool, int, float, dict, list, tuple)
_EXACT = frozenset(_JSON_TYPES)


def _walk(item: object, depth: int, what: str) -> None:
    # Runs on every appended message's metadata and parts: exact type checks first, and
    # isinstance only for subclasses (an str Enum, an OrderedDict).
    t = type(item)
    if t not in _EXACT:
        if item is None:
            return
        base = next((b for b in _JSON_TYPES if isinstance(item, b)), None)
        if base is None:
            raise InvalidContent(
                f"{what} holds a {t.__name__}, which is not JSON; convert it first"
            )
        t = base
    if t is str or t is int or t is bool:
        return
    if t is float:
        if not math.isfinite(item):  # type: ignore[arg-type]
            raise InvalidContent(f"{what} holds {item!r}, which JSON cannot store; use null")
        return
    if depth >= MAX_DEPTH:
        raise InvalidContent(f"{what} is nested deeper than {MAX_DEPTH} levels")
    if t is dict:
        for key, sub in item.items():  # type: ignore[attr-defined]
            if not isinstance(key, str):
                raise InvalidContent(f"{what} has a non-string key {key!r}")
            _walk(sub, depth + 1, what)
    else:
        for sub in item:  # type: ignore[attr-defined]
            _walk(sub, depth + 1, what)


def encode_json(value: object) -> str:
    return orjson.dumps(value).decode("utf-8")


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One JSONL line, UTF-8. Refuses lone surrogates and oversize records."""
    data = _encode(record)
    if len(data) > MAX_RECORD_BYTES:
        _too_large(len(data))
    return data


HEAD = ("id", "kind", "session", "created_at")
# Bytes of a record's head around its four values: '{"id":"","kind":"","session":,"created_at":""'.
_HEAD_FRAME = 45
_ID_LEN = 26
_STAMP_LEN = 27


class Draft(NamedTuple):
    """A record checked and encoded before the session lock is taken.

    Everything but the head (``id``, ``kind``, ``session``, ``created_at``) is encoded once,
    outside the lock; ``Store._write`` stamps the id and the time under the lock and writes
    ``{head,body``. The bytes are those ``encode_record`` gives for the whole record, with
    the head keys first.
    """

    kind: str
    body: bytes  # b"}\n", or b',"role":...}\n': the members after the head, and the newline
    id: str | None  # None: a new id is given under the lock
    at_us: int | None  # None: stamped with the time of the write
    fields: JSONDict  # the body as it reads back: what readers of the bytes will see
    when: datetime | None = None  # the caller's time, when it is already an aware UTC datetime


def draft_record(record: Mapping[str, Any], session_json: bytes) -> Draft:
    """The draft of a whole record dict (``id`` and ``created_at`` may be None: given later);
    refuses what cannot be stored (lone surrogates, integers over 64 bits, a record over
    ``MAX_RECORD_BYTES``)."""
    kind = record["kind"]
    at = record.get("created_at")
    rest = _encode({k: v for k, v in record.items() if k not in HEAD})
    return Draft(
        kind,
        _body(kind, session_json, rest),
        record.get("id"),
        None if at is None else parse_us(at),
        orjson.loads(rest),
    )


def message_draft(
    session_json: bytes,
    role: object,
    content: object,
    metadata: object,
    at_us: int | None,
    when: datetime | None = None,
) -> Draft:
    """A new message, checked and encoded: the append path, so the common case is made cheap.

    Text content is encoded and never decoded (a string reads back as itself). Metadata is
    encoded on its own and checked by what survives the round trip: if decoding gives the
    same value back and its bytes hold too few brackets to nest deeper than ``MAX_DEPTH``, it
    is stored faithfully. Anything else (NaN, a datetime, a non-string key, an object orjson
    cannot encode) takes the full check, which names what is wrong.
    """
    fields: JSONDict = {"role": check_role(role)}
    text = type(content) is str
    fields["content"] = content if text else check_content(content)
    rest = _encode(fields)
    if not text:
        fields["content"] = orjson.loads(rest)["content"]  # a copy: parts are mutable
    if metadata is not None:
        if type(metadata) is not dict:
            metadata = check_metadata(metadata)
        if metadata:
            try:
                # Subclasses (a dict with its own __eq__ could make the comparison below pass
                # over a NaN), datetimes and dataclasses are refused here: they take the walk.
                meta = orjson.dumps(metadata, option=_EXACT_ONLY)
                back = orjson.loads(meta)
                faithful = back == metadata and meta.count(b"{") + meta.count(b"[") <= MAX_DEPTH
            except (TypeError, ValueError):  # ValueError: an orjson.Fragment that is not JSON
                faithful = False
            if not faithful:
                metadata = check_metadata(metadata)  # raises, saying why, unless a tuple
                meta = _encode(metadata)[:-1]
                back = orjson.loads(meta)
            rest = b"".join((rest[:-2], b',"metadata":', meta, b"}\n"))
            fields["metadata"] = back
    return Draft("message", _body("message", session_json, rest), None, at_us, fields, when)


def _body(kind: str, session_json: bytes, rest: bytes) -> bytes:
    """A draft's body from its other members encoded as an object (``{...}\n``); refuses a
    record that would be over ``MAX_RECORD_BYTES`` with its head."""
    body = b"}\n" if len(rest) == 3 else b"," + rest[1:]
    size = _HEAD_FRAME + _ID_LEN + len(kind) + len(session_json) + _STAMP_LEN + len(body)
    if size > MAX_RECORD_BYTES:
        _too_large(size)
    return body


def new_message(
    mid: str, session_id: str, fields: JSONDict, at_us: int, when: datetime | None = None
) -> Message:
    """The Message of a message record just written (its members after the head: ``fields``)."""
    return make_message(
        mid,
        session_id,
        fields["role"],
        fields["content"],
        fields.get("metadata") or {},
        from_us(at_us) if when is None else when,
    )


def _encode(value: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(value, option=_APPEND_NEWLINE)
    except TypeError as e:  # orjson.JSONEncodeError is a TypeError
        reason = "a lone surrogate, which is not valid Unicode" if "UTF-8" in str(e) else str(e)
        raise InvalidContent(f"record cannot be stored as JSON: it holds {reason}") from None


def _too_large(size: int) -> NoReturn:
    raise InvalidContent(
        f"a record of {size:,} bytes is over the {MAX_RECORD_BYTES:,}-byte limit; "
        "store large payloads as files and reference them from an image or text part"
    )


def blob_hash(value: object) -> tuple[str, str]:
    """(hash, canonical JSON) of a value; the hash names the blob in every clone alike."""
    try:
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as e:
        raise InvalidContent(f"state cannot be stored as JSON: {e}") from None
    return hashlib.sha256(canonical).hexdigest()[:32], canonical.decode("utf-8")


_LABELS = ("title", "user_id", "org_id", "agent_id")


def record_problem(r: Any, session_id: str, *, deep: bool = True) -> str | None:
    """Why a record read from disk cannot be replayed, or None if it can.

    Readers skip (and report) such records instead of failing: a record may come from a buggy
    tool, another clone, or damage the checksums did not catch, and one bad record must never
    hide the rest of a session. Unknown kinds are not a problem: a later format may add kinds
    that older readers ignore (docs/FORMAT.md, section 9).

    ``deep=False`` (the readers' replay) checks the shapes replay relies on; ``deep=True``
    (``check()``) also walks content parts and metadata as a write would. JSON read from disk
    cannot hold NaN or non-string keys, so the shallow check is enough to replay safely.
    """
    if not isinstance(r, dict):
        return "not a JSON object"
    for key in ("id", "kind", "session", "created_at"):
        if not isinstance(r.get(key), str):
            return f"missing {key}"
    if r["session"] != session_id:
        return f"belongs to session {r['session']!r}, found in {session_id!r}"
    kind = r["kind"]
    try:
        if deep:  # replay parses created_at itself, once
            parse_us(r["created_at"])
        if kind == "message":
            check_role(r.get("role"))
            if deep:
                check_content(r.get("content"))
                check_metadata(r.get("metadata"))
            else:
                content = r.get("content")
                if not isinstance(content, str) and not (
                    isinstance(content, list) and all(isinstance(p, dict) for p in content)
                ):
                    return "content is neither text nor a list of parts"
                if not isinstance(r.get("metadata", {}), dict):
                    return "metadata is not an object"
            if "edit_id" in r and not (
                isinstance(r["edit_id"], str) and isinstance(r.get("edited_at"), str)
            ):
                return "edit_id without edited_at"
            if "edited_at" in r and deep:
                parse_us(r["edited_at"])
        elif kind in ("edit", "delete"):
            if not isinstance(r.get("target"), str):
                return f"{kind} without a target"
            if kind == "edit" and deep:
                check_content(r.get("content"))
            elif kind == "edit" and not isinstance(r.get("content"), (str, list)):
                return "edit content is neither text nor a list of parts"
        elif kind == "session":
            for name in _LABELS:
                if r.get(name) is not None and not isinstance(r[name], str):
                    return f"{name} is not a string"
            check_metadata(r.get("metadata"))
            parent = r.get("parent")
            if parent is not None:
                if not isinstance(parent, dict) or not isinstance(parent.get("message"), str):
                    return "parent is not {session, message}"
                validate_session_id(parent.get("session"))
                if isinstance(parent.get("created_at"), str):
                    parse_us(parent["created_at"])  # where a branch cuts its parent's messages
        elif kind == "blob":
            if not isinstance(r.get("hash"), str) or "data" not in r:
                return "blob without hash or data"
        elif kind in ("state", "checkpoint"):
            problem = _ref_problem(r)
            if problem:
                return problem
            if kind == "checkpoint":
                if not isinstance(r.get("checkpoint_id"), str):
                    return "checkpoint without checkpoint_id"
                if not isinstance(r.get("namespace", ""), str):
                    return "namespace is not a string"
                check_metadata(r.get("metadata"))
        elif kind == "cp_delete":
            ids = r.get("checkpoint_ids")
            if ids is not None and not (
                isinstance(ids, list) and all(isinstance(i, str) for i in ids)
            ):
                return "checkpoint_ids is not a list of strings"
        elif kind == "cp_writes":
            if not (isinstance(r.get("checkpoint_id"), str) and isinstance(r.get("task_id"), str)):
                return "writes without checkpoint_id or task_id"
            writes = r.get("writes")
            if not isinstance(writes, list) or not all(
                isinstance(w, list) and len(w) == 2 and isinstance(w[0], str) for w in writes
            ):
                return "writes is not a list of [channel, blob]"
    except InvalidInput as e:
        return str(e)
    return None


def _ref_problem(r: dict[str, Any]) -> str | None:
    if "parts" in r:
        parts = r["parts"]
        if isinstance(parts, dict) and all(isinstance(h, str) for h in parts.values()):
            return None
        return "parts is not {key: blob hash}"
    return None if isinstance(r.get("value"), str) else "no value or parts"
