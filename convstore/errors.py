"""The one exception hierarchy of convstore.

Every refusal is a :class:`ConvstoreError`; its message names what was wrong and what to do.
Nothing is written to the store when one of these is raised by a write.
"""

from __future__ import annotations


class ConvstoreError(Exception):
    """Base class of every error convstore raises on purpose."""


class InvalidInput(ConvstoreError, ValueError):
    """An argument was refused before anything was written."""


class InvalidSessionId(InvalidInput):
    """A session id that is empty, too long, or could escape the store folder."""


class InvalidRole(InvalidInput):
    """A message role outside system, developer, user, assistant, tool."""


class InvalidContent(InvalidInput):
    """Message content, metadata or state that cannot be stored as JSON."""


class InvalidDate(InvalidInput):
    """A date or time that none of the accepted forms parses."""


class NotFound(ConvstoreError, KeyError):
    """Something that was asked for does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence.
        return str(self.args[0]) if self.args else ""


class SessionNotFound(NotFound):
    """No session with that id exists (or it was deleted)."""


class MessageNotFound(NotFound):
    """No message with that id exists in the session."""


class CheckpointNotFound(NotFound):
    """No checkpoint with that id exists in the session."""


class SessionExists(ConvstoreError):
    """A session with that id exists already (or existed and was deleted)."""


class CaseCollision(SessionExists):
    """A new session id differs only by case from an existing one: on macOS and Windows both
    would be one folder."""


class StoreError(ConvstoreError):
    """The store folder cannot be used as it is (not a store, or from a newer format)."""


class FormatVersionError(StoreError):
    """The store was written by a newer format version than this convstore reads."""


class UnsafePath(StoreError):
    """A symbolic link (or a non-folder) where the store expects one of its own folders or
    files: convstore never follows a link inside a store."""


class CorruptData(ConvstoreError):
    """A file in the store failed its checksum or does not parse."""


class LockTimeout(ConvstoreError):
    """A lock on the store could not be taken in time."""


class QueryError(ConvstoreError):
    """A SQL statement or search query was refused."""


class CacheError(ConvstoreError):
    """The query cache (catalog or search index) could not be built, updated or read."""


class ImportFormatError(ConvstoreError):
    """A file given to import is malformed; nothing of it was imported."""


class ImportTooLarge(ImportFormatError):
    """A file given to import holds more than the import limits allow (size or zip ratio)."""


class SyncError(ConvstoreError):
    """A git sync was refused or failed: not a repository, unresolved conflicts, git errors."""

    report: object = None  # the SyncReport of what was done before, when there is one
