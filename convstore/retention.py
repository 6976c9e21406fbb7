"""Retention: delete what is older than a cutoff; compaction then removes the bytes.

``prune`` writes records, it never rewrites files: a ``delete`` tombstone for every message
created before the cutoff, and a ``drop`` for every session with no activity at all since the
cutoff (its title, metadata, agent state and checkpoints go with it). Readers hide all of it at
once, in every process and, after a sync, in every clone. The next compaction of each session
(``store.compact()``, ``convstore prune --compact``, or the automatic one) removes the bytes
from the folder; the query layer drops them from its catalog and index on its next refresh.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .dates import When, parse_when
from .errors import InvalidDate, InvalidInput
from .ids import format_us, from_us, now_us, to_us, validate_session_id
from .wording import plural

if TYPE_CHECKING:
    from .store import Store
    from .view import SessionView

__all__ = ["PruneReport", "prune"]

# Tombstones per append: one frame, one fsync. Big enough that pruning a long session costs a
# handful of appends, small enough that a frame stays far below the record size limit.
_BATCH = 1000


@dataclass
class PruneReport:
    """What ``prune`` deleted (or, with ``dry_run``, would delete)."""

    cutoff: datetime
    dry_run: bool
    messages: int = 0
    per_session: dict[str, int] = field(default_factory=dict)  # messages deleted per session
    dropped: list[str] = field(default_factory=list)  # sessions deleted whole

    @property
    def sessions(self) -> list[str]:
        """Every session that prune changed (messages deleted or dropped), sorted."""
        return sorted(set(self.per_session) | set(self.dropped))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": format_us(to_us(self.cutoff)),
            "dry_run": self.dry_run,
            "messages": self.messages,
            "sessions": len(self.sessions),
            "sessions_dropped": len(self.dropped),
            "per_session": dict(sorted(self.per_session.items())),
            "dropped": sorted(self.dropped),
        }

    def __str__(self) -> str:
        text = self.summary()
        if not self.dry_run and self.sessions:
            text += "; run `convstore compact` to remove their bytes"
        return text

    def summary(self) -> str:
        """One line: what was (or would be) deleted."""
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"{verb} {plural(self.messages, 'message')} older than "
            f"{format_us(to_us(self.cutoff))} in {plural(len(self.sessions), 'session')} "
            f"({plural(len(self.dropped), 'session')} whole)"
        )


def prune(
    store: Store,
    older_than: When = "90d",
    *,
    user_id: str | None = None,
    org_id: str | None = None,
    dry_run: bool = False,
) -> PruneReport:
    """Delete messages created before ``older_than`` (a span back from now such as ``"90d"``,
    or a date), in every session or those of ``user_id`` / ``org_id``.

    A session whose last activity of any kind is before the cutoff is deleted whole. Messages a
    branch inherits from its parent are its parent's: they go when the parent's go, and when the
    parent is deleted, pruning the branch gives them their tombstones. With ``dry_run`` nothing
    is written and the report says what would go.
    """
    if older_than is None:
        raise InvalidInput("older_than is required: a span such as '90d' or a date")
    cutoff = parse_when(older_than)
    assert cutoff is not None
    now = now_us()
    if cutoff > now:
        raise InvalidDate(
            f"older_than={older_than!r} is in the future ({format_us(cutoff)}): every message "
            "would go. Pass a span back from now (90d) or a past date"
        )
    report = PruneReport(from_us(cutoff), dry_run)
    # Tombstones to write, per session that owns the messages. A branch shows its parent's
    # messages as its own; when that parent is deleted nobody else prunes them, so the branch
    # does: its old inherited messages get tombstones in the deleted parent's folder.
    targets: dict[str, list[str]] = {}
    deleted: set[str] = set()  # owners of inherited messages that are deleted sessions
    inactive: list[str] = []
    for sid in store.session_ids():
        try:
            validate_session_id(sid)
        except InvalidInput:
            continue
        with store._reading(sid) as view:
            if not _chosen(view, user_id, org_id):
                continue
            # order_keys is sorted by (created_at, id): everything before the cutoff is a prefix.
            keys, order = view.shown()
            end = bisect.bisect_left(keys, (cutoff, ""))
            own = [m.id for m in order[:end]]
            idle = view.last_us < cutoff
            branch = view.field("parent") is not None
        if own:
            targets.setdefault(sid, []).extend(own)
        if branch:
            for m in store._ordered(sid):
                if m.session_id != sid and to_us(m.created_at) < cutoff:
                    with store._reading(m.session_id) as owner:
                        owner_dropped = owner.dropped is not None
                    if owner_dropped:
                        targets.setdefault(m.session_id, []).append(m.id)
                        deleted.add(m.session_id)
        if idle:
            inactive.append(sid)
    for sid in [*targets, *(s for s in inactive if s not in targets)]:
        unique = list(dict.fromkeys(targets.get(sid, [])))  # branches may share a message
        if dry_run:
            n, dropped = len(unique), sid in inactive
        else:
            n, dropped = _settle(store, sid, unique, sid in deleted, sid in inactive, cutoff)
        if n:
            report.per_session[sid] = n
            report.messages += n
        if dropped:
            report.dropped.append(sid)
    return report


def _chosen(view: SessionView, user_id: str | None, org_id: str | None) -> bool:
    """A live session of the given user and org (call with the view lock held)."""
    if not view.exists or view.dropped is not None:
        return False
    if user_id is not None and view.field("user_id") != user_id:
        return False
    return org_id is None or view.field("org_id") == org_id


def _settle(
    store: Store, sid: str, ids: list[str], owner_dropped: bool, idle: bool, cutoff: int
) -> tuple[int, bool]:
    """Write the tombstones for those of ``ids`` still shown and, if ``idle`` and the session
    still is, its drop; returns (tombstones written, dropped).

    The scan decided without the session locks, so that appends never wait for a whole
    store's scan. Here each decision is taken again under the session's lock, after catching
    up with every process's and clone's files, and held until the records are written: an
    append acknowledged before then is seen (the session is no longer idle), one made after
    waits for the lock and then finds the session deleted (SessionNotFound). No drop is ever
    written over an acknowledged append.
    """
    with store._locks.get(sid):
        with store._reading(sid) as view:
            # A session deleted since the scan needs no tombstones (nor may it take them); a
            # deleted parent whose messages a live branch inherits takes them still.
            if (view.dropped is not None) != owner_dropped:
                return 0, False
            live = [t for t in ids if t not in view.deleted]
            # The filters were checked by the scan; only activity can have changed since.
            drop = idle and view.dropped is None and view.last_us < cutoff
        for i in range(0, len(live), _BATCH):
            chunk = [store._record("delete", sid, target=t) for t in live[i : i + _BATCH]]
            # A deleted parent's messages that a live branch still shows get their tombstones
            # in the parent's folder, which the store otherwise refuses to write to.
            store._write(sid, chunk, allow_dropped=owner_dropped)
        if drop:
            store._write(sid, [store._drop_record(sid)])
    return len(live), drop
