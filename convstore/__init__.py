"""convstore: a local-first, file-based store for LLM conversation history."""

from .errors import (
    CheckpointNotFound,
    ConvstoreError,
    CorruptData,
    FormatVersionError,
    ImportFormatError,
    InvalidContent,
    InvalidDate,
    InvalidInput,
    InvalidRole,
    InvalidSessionId,
    LockTimeout,
    MessageNotFound,
    NotFound,
    QueryError,
    SessionExists,
    SessionNotFound,
    StoreError,
    SyncError,
    UnsafePath,
)
from .records import ROLES, Message
from .session import CheckpointEntry, PendingWrite, Session, StateEntry
from .store import Store

__version__ = "0.1.0"
__all__ = [
    "ROLES",
    "CheckpointEntry",
    "CheckpointNotFound",
    "ConvstoreError",
    "CorruptData",
    "FormatVersionError",
    "ImportFormatError",
    "InvalidContent",
    "InvalidDate",
    "InvalidInput",
    "InvalidRole",
    "InvalidSessionId",
    "LockTimeout",
    "Message",
    "MessageNotFound",
    "NotFound",
    "PendingWrite",
    "QueryError",
    "Session",
    "SessionExists",
    "SessionNotFound",
    "StateEntry",
    "Store",
    "StoreError",
    "SyncError",
    "UnsafePath",
]
