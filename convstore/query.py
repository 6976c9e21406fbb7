"""The query layer: SQL, search, statistics and fast listings over a derived, rebuildable cache.

Everything here lives under ``<store>/.cache/`` and is derived from the segment files
(invariant 1): the DuckDB catalog (``catalog.py``), the tantivy index (``search.py``), kept up to
date by incremental ingest (``ingest.py``). Delete ``.cache`` and the next query rebuilds it. A
cache that is missing, damaged, half-written, of another version or made for another store
folder is detected when it is opened or read and rebuilt, never trusted.

Freshness: the first query in a process, and every ``refresh()``, reads what changed in every
session folder. Between refreshes, queries catch up with this process's own appends (cheap: no
scan), and see other processes' writes as of the last refresh, like a snapshot.

Concurrency: one refresher at a time per store, under a store-wide lock; readers take no lock
and never wait for a refresh, except the first open of an empty cache, which waits for the build.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import filelock
import pyarrow as pa

from . import layout
from .catalog import (
    BaseBuilder,
    CacheInvalid,
    Catalog,
    Manifest,
    new_name,
    read_manifest,
    write_manifest,
)
from .dates import When, parse_range
from .errors import CacheError, ConvstoreError, InvalidInput, LockTimeout, QueryError
from .ids import from_us
from .ingest import FolderPos, Update, Views, collect, load_positions, plan, session_names
from .inotify import FULL_SCAN_EVERY, FolderWatch
from .locks import store_lock
from .rebuild import build
from .records import check_role
from .sealnotes import Notes, SealNote, read_notes, remove_files
from .search import (
    IndexInvalid,
    SearchHit,
    SearchIndex,
    document,
    make_snippet,
)
from .stats import Stats, compute

if TYPE_CHECKING:
    from .store import Store

__all__ = ["QueryLayer", "QueryResult", "SearchHit", "Stats"]

# A cold build of a million messages takes about a minute; a process that needs the catalog
# while another builds it waits for that build rather than building a second one.
REFRESH_TIMEOUT = 900.0
# A refresh looks at this many session folders at a time, and publishes what it has read once
# the changed sessions' views hold this many messages: memory stays bounded however much changed.
_COLLECT_SESSIONS = 256
_PUBLISH_MESSAGES = 50_000
MAX_LIMIT = 10_000
# Below this much free space, a cache failure is reported as a full disk.
_LOW_SPACE = 1 << 20
_ALLOWED = frozenset({"SELECT", "EXPLAIN"})


class QueryResult:
    """Rows of a SQL query, with Arrow, pandas and dict forms."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._rows: list[tuple[Any, ...]] | None = None

    @property
    def columns(self) -> list[str]:
        return list(self._table.column_names)

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            cols = [c.to_pylist() for c in self._table.columns]
            self._rows = list(zip(*cols, strict=True)) if cols else []
        return self._rows

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return self.rows[index]

    def __repr__(self) -> str:
        return f"QueryResult(columns={self.columns!r}, rows={len(self)})"

    def scalar(self) -> Any:
        """The first column of the first row (None when there is no row)."""
        return self.rows[0][0] if len(self) and self.columns else None

    def to_arrow(self) -> pa.Table:
        return self._table

    def to_dicts(self) -> list[dict[str, Any]]:
        return self._table.to_pylist()  # type: ignore[no-any-return]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` (needs pandas, which convstore does not require)."""
        try:
            return self._table.to_pandas()
        except ImportError:
            raise ConvstoreError(
                "to_pandas() needs pandas: pip install pandas (or use to_arrow())"
            ) from None

    df = to_pandas


class QueryLayer:
    """SQL, search, statistics and listings for one store (``Store`` delegates to it)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.path
        self.sessions_dir = store.path / layout.SESSIONS
        # The local cache is the store's own .cache, or elsewhere for a read-only store.
        self.catalog_dir = store.cache_root / layout.CACHE / "catalog"
        self.index_dir = store.cache_root / layout.CACHE / "index"
        self._lock = threading.RLock()
        self._catalog: Catalog | None = None
        self._index: SearchIndex | None = None
        self._index_opstamp = -1
        self._reload_index = False
        self._views = Views()
        self._refreshed = False
        self.resealed = 0  # folders whose compaction a refresh took from a note, not a re-read
        self._stale: set[str] = set()
        self._watch: FolderWatch | None = None
        self._watch_failed = False
        self._dirty: set[str] = set()  # folders the watch reported that no refresh read yet
        self._last_full = 0.0
        self._file_lock: filelock.FileLock | None = None
        # Called as (sessions done, sessions in all) by every rebuild, including the ones a
        # query starts on its own (no cache yet, or a damaged one): a CLI shows a progress bar.
        self.rebuild_progress: Callable[[int, int], None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._catalog is not None:
                self._catalog.close()
            self._catalog = None
            self._index = None
            self._views.clear()
            self._refreshed = False
            if self._watch is not None:
                self._watch.close()
            self._watch = None

    def _identity(self) -> str:
        # The cache belongs to this folder: a copy of the store (cp -r, a restored backup) has
        # a new inode and rebuilds, where a renamed or moved store keeps its cache.
        st = os.stat(self.sessions_dir)
        return f"{st.st_dev}:{st.st_ino}"

    @contextmanager
    def _refresh_lock(self) -> Iterator[None]:
        """The store-wide refresh lock. One FileLock object per QueryLayer, so that a nested
        acquire (a refresh that finds the cache broken and rebuilds it) re-enters it; a second
        object on the same file would wait for the first forever."""
        if self._file_lock is None:
            self._file_lock = store_lock(self.store.cache_root, "catalog", timeout=REFRESH_TIMEOUT)
        lock = self._file_lock
        layout.private_dir(
            Path(lock.lock_file).parent, below=self.store.cache_root
        )  # .cache may be gone
        try:
            lock.acquire()
        except filelock.Timeout:
            raise LockTimeout(
                f"another process has held the catalog lock of {self.root} for over "
                f"{REFRESH_TIMEOUT:.0f}s (a rebuild?); retry later"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def _install(self, manifest: Manifest) -> None:
        """Make ``manifest`` this process's snapshot (raises CacheInvalid, IndexInvalid)."""
        if self._catalog is None:
            layout.private_dir(self.catalog_dir, below=self.store.cache_root)
            self._catalog = Catalog(self.catalog_dir)
        self._catalog.load(manifest)
        index = self._index
        if index is None or index.path.name != manifest.index:
            self._index = None
            index = SearchIndex(self.index_dir / manifest.index)
            self._views.clear()  # a rebuilt cache: compare everything again
            self._index_opstamp = -1
        on_disk = index.opstamp()
        if on_disk < manifest.index_opstamp:
            raise IndexInvalid(
                f"search index {index.path} is behind the catalog "
                f"({on_disk} < {manifest.index_opstamp})"
            )
        if on_disk != self._index_opstamp or self._reload_index:
            index.reload()
            self._index_opstamp = on_disk
            self._reload_index = False
        self._index = index

    def _load(self) -> None:
        """Load the current snapshot, retrying a publish that raced with us, else rebuild."""
        identity = self._identity()
        for attempt in range(3):
            try:
                self._install(read_manifest(self.catalog_dir, identity))
                return
            except CacheInvalid:
                if attempt < 2:
                    time.sleep(0.02 * (attempt + 1))
        with self._refresh_lock():
            try:
                self._install(read_manifest(self.catalog_dir, identity))
            except IndexInvalid:
                self._rebuild_index()  # the catalog is sound: the index is rebuilt from it
            except CacheInvalid as e:
                self._rebuild(str(e))

    def _sync(self) -> None:
        """Catch up with snapshots other processes published (one stat when none did)."""
        catalog = self._catalog
        if catalog is None or catalog.manifest is None or self._index is None:
            # Nothing loaded yet, or a failed build or load left no snapshot behind (a stat of
            # the manifest cannot tell: there may be none on disk either).
            self._load()
        elif catalog.changed_on_disk():
            try:
                self._install(read_manifest(self.catalog_dir, self._identity()))
            except CacheInvalid:
                self._load()

    def _ready(self) -> tuple[Catalog, SearchIndex]:
        """The snapshot to answer a query from, caught up as cheaply as possible."""
        self._sync()
        self._catch_up(explicit=False)
        return self._snapshot()

    def _snapshot(self) -> tuple[Catalog, SearchIndex]:
        """The loaded catalog and index (CacheInvalid when none is: a call that failed)."""
        catalog, index = self._catalog, self._index
        if catalog is None or index is None or catalog.manifest is None:
            raise CacheInvalid("no catalog snapshot is loaded")
        return catalog, index

    def _discard(self) -> None:
        """Forget this process's snapshot after a failure, so that the next call starts again
        from what is on disk: a refresh that failed half-way (its part written but not applied
        here, its index commit made but no manifest naming it) leaves nothing half-applied in
        memory. The files stay consistent by construction: the manifest is replaced atomically
        and names only fsynced files, and index commits are idempotent (``SearchIndex.apply``)."""
        if self._catalog is not None:
            self._catalog.close()
        self._catalog = None
        self._index = None
        self._index_opstamp = -1
        self._reload_index = False
        self._views.clear()
        self._refreshed = False

    @contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """Turn any failure of the cache under ``what`` into a CacheError that says what to do
        (or let a ConvstoreError through), and drop the snapshot (``_discard``)."""
        try:
            yield
        except (QueryError, InvalidInput):
            raise  # refused before the cache was touched
        except BaseException as e:
            self._discard()
            if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
                raise  # KeyboardInterrupt, SystemExit: as they are
            if isinstance(e, ConvstoreError):
                raise
            raise CacheError(f"{what}: {self._diagnose(e)}") from e

    def _diagnose(self, e: BaseException) -> str:
        """The cause of a cache failure and what to do about it. tantivy reports a full disk
        as "an index writer was killed", so the cache's file system is asked as well."""
        cause = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e)
        code = e.errno if isinstance(e, OSError) else None
        cache = self.store.cache_root / layout.CACHE
        try:
            st = os.statvfs(cache if cache.exists() else self.root)
        except OSError:
            st = None
        if code == errno.ENOSPC or (st is not None and st.f_bavail * st.f_frsize < _LOW_SPACE):
            if "space" not in cause.lower():
                cause += " (no space left on the device)"
            return f"{cause}; free space on the disk of {cache} and retry"
        read_only = st is not None and bool(st.f_flag & os.ST_RDONLY)
        if code in (errno.EROFS, errno.EACCES, errno.EPERM) or read_only:
            if "read-only" not in cause.lower() and "permission" not in cause.lower():
                cause += " (the cache folder is read-only)"
            return f"{cause}; make {cache} writable and retry"
        return (
            f"{cause}; retry, and if it fails again run `convstore reindex` or delete "
            f"{cache} (a cache derived from the files: nothing is lost)"
        )

    def _catch_up(self, *, explicit: bool) -> None:
        """Read what changed in the folders: everything the first time, then what the folder
        watch reports (Linux), else this process's own appends (and everything when asked)."""
        if not self._refreshed:
            self._refresh(None)
            return
        watch = self._watch
        due = explicit and time.monotonic() - self._last_full > FULL_SCAN_EVERY
        if watch is not None and watch.usable and not due:
            dirty = watch.drain()
            if dirty is None:  # events may have been lost
                self._refresh(None)
            else:
                self._dirty |= dirty
                if self._dirty or self._stale:
                    self._refresh(sorted(self._dirty))
            return
        if explicit:
            self._refresh(None)
            return
        own = self._own_writes()
        if own or self._stale:
            self._refresh(own)

    def _own_writes(self) -> list[str]:
        """Sessions this process appended to since the catalog last read them.

        The store's appenders know where their last append ended; comparing that with what
        the catalog ingested costs no system call.
        """
        catalog, _ = self._snapshot()
        store = self.store
        with store._guard:
            appenders = [(sid, ap.path, ap.end) for sid, ap in store._appenders.items()]
        if not appenders:
            return []
        positions = load_positions(catalog)
        dirty = []
        for sid, path, end in appenders:
            if path is None:
                continue
            pos = positions.get(sid)
            fp = None if pos is None else pos.files.get(path.name)
            if fp is None or fp.ingested != end:
                dirty.append(sid)
        return dirty

    # -- refreshing ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the catalog and the index up to date with every session folder."""
        with self._lock, self._failing("the catalog could not be refreshed"):
            self._sync()
            self._catch_up(explicit=True)

    def _watch_all(self, names: list[str]) -> None:
        """Set the folder watch up (once) and watch every folder, then forget the events so
        far: the scan that follows reads what they were about."""
        if self._watch is None and not self._watch_failed:
            try:
                self._watch = FolderWatch(self.sessions_dir)
            except OSError:
                self._watch_failed = True
        if self._watch is not None:
            for sid in names:
                self._watch.watch(sid)
            self._watch.drain()

    def _refresh(self, only: list[str] | None) -> None:
        with self._refresh_lock():
            self._sync()
            catalog, index = self._snapshot()
            positions = load_positions(catalog)
            if only is None:
                names = session_names(self.sessions_dir, positions)
                self._watch_all(names)
            else:
                names = only
            # Changed sessions are read, planned and published a bounded batch at a time:
            # when most of a large store changed at once (a compaction, a big pull), holding
            # every replayed view and every planned row until the end took gigabytes.
            files_gone = False
            pending: list[Update] = []
            settled: set[str] = set()
            moved: dict[str, FolderPos] = {}
            held = 0
            notes = read_notes(self.store.cache_root)
            for start in range(0, len(names), _COLLECT_SESSIONS):
                found = collect(
                    self.sessions_dir,
                    positions,
                    self._views,
                    names[start : start + _COLLECT_SESSIONS],
                    everything=False,
                    notes=notes.by_session,
                )
                pending += found.updates
                settled |= found.settled
                moved |= found.moved
                self.resealed += found.resealed
                held += sum(len(u.view.messages) for u in found.updates if u.view is not None)
                held += len(found.moved)
                if held >= _PUBLISH_MESSAGES:
                    files_gone |= self._publish(catalog, index, pending, settled, set(), moved)
                    pending, settled, moved, held = [], set(), {}, 0
            if only is None:
                present = set(names)
                pending += [Update(sid, None) for sid in positions if sid not in present]
            files_gone |= self._publish(
                catalog, index, pending, settled, self._verified_stale(catalog), moved
            )
            self._stale.clear()
            if notes.files:
                self._forget_notes(catalog, notes, only)
            if files_gone and catalog.current().purge_debt:
                # Compaction or prune took text out of the segments that the cache still
                # holds (in the base file, the parts, the index's postings): rewrite both.
                self._rebuild_index(rewrite=True)
            elif catalog.needs_rewrite(catalog.base_message_count()):
                catalog.rewrite()
            elif catalog.needs_merge():
                catalog.merge_parts()
            if only is None:
                self._refreshed = True
                self._last_full = time.monotonic()
                self._dirty.clear()
            else:
                self._dirty.difference_update(only)

    def _publish(
        self,
        catalog: Catalog,
        index: SearchIndex,
        updates: list[Update],
        settled: set[str],
        stale: set[str],
        moved: dict[str, FolderPos],
    ) -> bool:
        """Bring the catalog and the index up to date with ``updates`` and ``moved``; True if a
        segment the catalog had read is gone, shrank or was replaced."""
        changes = plan(catalog, updates, settled, moved)
        manifest = catalog.current()
        opstamp = manifest.index_opstamp
        if changes.index or stale:
            # The searcher reloads lazily, at the next search (a reload after a commit
            # opens the new segment files, ~10 ms, and a refresh may be all we do).
            opstamp = index.apply(
                changes.index.add,
                changes.index.delete | stale,
                changes.index.delete_sessions,
            )
            self._index_opstamp = opstamp
            self._reload_index = True
        if any(changes.tables.values()):
            catalog.publish(changes.tables, opstamp, changes.content_removed)
        elif opstamp != manifest.index_opstamp:
            catalog.set_index_opstamp(opstamp)
        for u in updates:
            if u.view is not None:
                u.view.ingested()
        return changes.files_gone

    def _forget_notes(self, catalog: Catalog, notes: Notes, only: list[str] | None) -> None:
        """Delete the files of seal notes that have all served: each one's sealed file is
        recorded now, or gone (a later compaction replaced it; its own note is what counts).
        After a refresh of some folders only, notes of the others have not served yet."""
        positions = load_positions(catalog)
        looked = None if only is None else set(only)

        def served(note: SealNote) -> bool:
            if looked is not None and note.session not in looked:
                return False
            pos = positions.get(note.session)
            if pos is not None and note.sealed in pos.files:
                return True
            return not (self.sessions_dir / note.session / note.sealed).exists()

        remove_files(
            self.store.cache_root,
            [name for name, held in notes.files.items() if all(served(n) for n in held)],
        )

    def _verified_stale(self, catalog: Catalog) -> set[str]:
        """Index documents a search found without a catalog row, still without one now."""
        if not self._stale:
            return set()
        known = {
            r[0]
            for r in catalog.rows(
                f"SELECT id FROM ({catalog.live_rows('messages', 'id = ANY($1)')})",
                [sorted(self._stale)],
            )
        }
        return self._stale - known

    def _rebuild_index(self, *, rewrite: bool = False) -> None:
        """A new index generation from the catalog's rows (under the lock); with ``rewrite``,
        a new base file too, published together with it."""
        catalog = self._catalog  # loaded; the index may not be (that is why it is rebuilt)
        if catalog is None:
            raise CacheInvalid("no catalog is loaded to rebuild the search index from")
        gen = new_name(catalog.current().seq + 1)
        layout.private_dir(self.index_dir, below=self.store.cache_root)
        index = SearchIndex(self.index_dir / gen, create=True)
        writer = index.bulk()
        try:
            reader = catalog.con.sql(
                "SELECT m.id, m.session_id, m.role, m.user_id, m.org_id, "
                "epoch_us(m.created_at) AS created_at, m.text, s.title "
                "FROM messages m LEFT JOIN sessions s ON s.id = m.session_id"
            ).to_arrow_reader(50_000)
            for batch in reader:
                for row in batch.to_pylist():
                    writer.add_document(document(row, row["title"]))
            opstamp = int(writer.commit())
            writer.wait_merging_threads()
        except BaseException:
            _abandon(writer)
            _remove_tree(index.path)
            raise
        if rewrite:
            catalog.rewrite(index=gen, index_opstamp=opstamp)
        else:
            m = catalog.current()
            new = Manifest(
                m.identity,
                m.base,
                gen,
                list(m.parts),
                m.seq + 1,
                opstamp,
                m.delta_rows,
                m.purge_debt,
                m.message_rows,
            )
            write_manifest(self.catalog_dir, new)
            catalog.load(new)
        index.reload()
        self._index = index
        self._index_opstamp = index.opstamp()
        self._reload_index = False
        self._views.clear()
        for entry in os.scandir(self.index_dir):
            if entry.name != gen:
                _remove_tree(Path(entry.path))

    def reindex(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Throw the cache away and rebuild it from the files; ``progress(done, total)``."""
        with self._lock, self._failing("the cache could not be rebuilt"), self._refresh_lock():
            if self._catalog is None:
                layout.private_dir(self.catalog_dir, below=self.store.cache_root)
                self._catalog = Catalog(self.catalog_dir)
            self._rebuild("reindex asked for", progress)

    def _rebuild(self, reason: str, progress: Callable[[int, int], None] | None = None) -> None:
        """Build a new base and index from every file and publish them (under the lock)."""
        layout.private_dir(
            self.catalog_dir, below=self.store.cache_root
        )  # the cache may have been deleted
        if self._catalog is None:
            self._catalog = Catalog(self.catalog_dir)
        catalog = self._catalog
        identity = self._identity()
        try:
            seq = read_manifest(self.catalog_dir, identity).seq
        except CacheInvalid:
            seq = 0
        gen = new_name(seq + 1)
        base_name = f"base.{gen}.duckdb"
        self._views.clear()
        layout.private_dir(self.index_dir, below=self.store.cache_root)
        index = SearchIndex(self.index_dir / gen, create=True)
        writer = index.bulk()
        builder = BaseBuilder(catalog, base_name)
        try:
            names = sorted(session_names(self.sessions_dir))
            self._watch_all(names)  # before reading: a change during the build is queued
            build(self.sessions_dir, names, builder, writer, progress or self.rebuild_progress)
            builder.finish()
            opstamp = int(writer.commit())
            writer.wait_merging_threads()
        except BaseException:
            builder.abort()
            _abandon(writer)
            _remove_tree(index.path)
            raise
        manifest = Manifest(identity, base_name, gen, [], seq + 1, opstamp)
        write_manifest(self.catalog_dir, manifest)
        self._index = None
        self._install(manifest)
        self._refreshed = True
        self._last_full = time.monotonic()
        catalog.collect_garbage()
        for entry in os.scandir(self.index_dir):
            if entry.name != gen:
                _remove_tree(Path(entry.path))
        del reason  # kept for debugging; the rebuild itself says nothing

    def _recover(self, what: str) -> None:
        """The snapshot in use turned out damaged while reading it: rebuild, under the lock."""
        with self._refresh_lock():
            self._rebuild(what)

    # -- SQL ----------------------------------------------------------------------------------

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> QueryResult:
        """Run one read-only statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN).

        The statement runs on the catalog's user connection (``Catalog.user_connection``):
        it sees the public tables and nothing else, reads and writes no file, changes no
        setting and loads no extension, whatever it is. The statement-type check below only
        gives the common refusals a clearer message; DuckDB's configuration is the guard.
        """
        if not isinstance(query, str) or not query.strip():
            raise QueryError("the SQL query is empty")
        if params is not None and not isinstance(params, (Mapping, list, tuple)):
            raise QueryError(
                f"params must be a list, a tuple or a dict, not {type(params).__name__}"
            )
        args: Any = list(params) if isinstance(params, tuple) else params
        with self._lock, self._failing("the SQL query could not run"):
            catalog, _ = self._ready()
            try:
                statements = catalog.con.extract_statements(query)
            except duckdb.Error as e:
                raise QueryError(f"SQL error: {_first_line(e)}") from None
            if len(statements) != 1:
                raise QueryError(
                    f"run one SQL statement at a time (got {len(statements)}); "
                    "the catalog is read-only"
                )
            _check_kind(statements[0])
            for attempt in range(2):
                try:
                    return QueryResult(self._run_user(catalog, query, args))
                except duckdb.Error as e:
                    if attempt == 0 and _is_damage(e, self.catalog_dir):
                        self._recover(str(e))
                        catalog, _ = self._ready()
                        continue
                    raise QueryError(_refusal(e)) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _run_user(catalog: Catalog, query: str, args: Any) -> pa.Table:
        """Run one user statement in a read-only transaction on a fresh cursor of the user
        connection: per-connection state (USE, temporary objects, variables) dies with it."""
        cur = catalog.user_connection().cursor()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            rel = cur.sql(query, params=args)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        finally:
            with contextlib.suppress(duckdb.Error):  # a COMMIT or an error may have ended it
                cur.execute("ROLLBACK")
            cur.close()
            if not catalog.user_connection_intact():
                catalog.drop_user_connection()
                raise QueryError(_READ_ONLY + "ATTACH and DETACH are not allowed")

    # -- search -------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        user_id: str | None = None,
        org_id: str | None = None,
        role: str | None = None,
        since: When | None = None,
        until: When | None = None,
        limit: int = 20,
        order: Literal["relevance", "newest"] = "relevance",
    ) -> list[SearchHit]:
        """Ranked full-text search over every message's text (see search.py for the syntax)."""
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")
        if order not in ("relevance", "newest"):
            raise InvalidInput(f"order must be 'relevance' or 'newest', not {order!r}")
        if role is not None:
            check_role(role)
        for name, value in (("session_id", session_id), ("user_id", user_id), ("org_id", org_id)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"{name} must be a string, not {type(value).__name__}")
        lo, hi = parse_range(since, until)
        with self._lock, self._failing("the search could not run"):
            for attempt in range(2):
                try:
                    return self._search(
                        query, session_id, user_id, org_id, role, lo, hi, limit, order
                    )
                except CacheInvalid as e:
                    if attempt:
                        raise CacheError(
                            f"the search index cannot be read: {e}; retry, and if it fails "
                            "again run `convstore reindex`"
                        ) from None
                    self._recover(str(e))
        raise AssertionError("unreachable")

    def _search(
        self,
        query: str,
        session_id: str | None,
        user_id: str | None,
        org_id: str | None,
        role: str | None,
        lo: int | None,
        hi: int | None,
        limit: int,
        order: str,
    ) -> list[SearchHit]:
        catalog, index = self._ready()
        if self._reload_index:
            index.reload()
            self._reload_index = False
        parsed = index.parse(query)
        filters = index.filters(
            session_id=session_id,
            user_id=user_id,
            org_id=org_id,
            role=role,
            since_us=lo,
            until_us=hi,
        )
        newest = order == "newest"
        try:
            top = index.top(parsed.query, filters, limit, newest)
        except BaseException as e:
            if isinstance(e, ValueError):
                raise QueryError(f"search failed: {e}") from None
            if isinstance(e, Exception) or type(e).__name__ == "PanicException":
                raise CacheInvalid(str(e)) from None
            raise
        texts = self._texts(catalog, [f.message_id for f in top])
        if len(texts) < len(top):
            self._sync()  # another process may have indexed them a moment before publishing
            catalog, _ = self._snapshot()
            texts = self._texts(catalog, [f.message_id for f in top])
        gen = index.highlighter(parsed)
        words = parsed.words
        hits = []
        for f in top:
            text = texts.get(f.message_id)
            if text is None:
                self._stale.add(
                    f.message_id
                )  # indexed, gone from the catalog: removed next refresh
                continue
            hits.append(
                SearchHit(
                    session_id=f.session_id,
                    message_id=f.message_id,
                    created_at=from_us(f.created_us),
                    role=f.role,
                    score=f.score,
                    snippet=make_snippet(gen, text, words),
                    text=text,
                    title=f.title,
                    user_id=f.user_id,
                    org_id=f.org_id,
                )
            )
        return hits

    @staticmethod
    def _texts(catalog: Catalog, ids: list[str]) -> dict[str, str]:
        """The texts of the given messages, from the catalog (one indexed lookup)."""
        return catalog.message_texts(ids)

    # -- statistics and listings --------------------------------------------------------------

    def stats(
        self,
        *,
        user_id: str | None = None,
        org_id: str | None = None,
        since: When | None = None,
        until: When | None = None,
    ) -> Stats:
        """Counts, session lengths, activity, top terms, tokens, models and storage."""
        lo, hi = parse_range(since, until)
        with self._lock, self._failing("the statistics could not be computed"):
            catalog, _ = self._ready()
            try:
                return compute(catalog, user_id=user_id, org_id=org_id, since_us=lo, until_us=hi)
            except duckdb.Error as e:
                if not _is_damage(e, self.catalog_dir):
                    raise
                self._recover(str(e))
                catalog, _ = self._ready()
                return compute(catalog, user_id=user_id, org_id=org_id, since_us=lo, until_us=hi)

    def sessions(
        self,
        *,
        user_id: str | None = None,
        org_id: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[str]:
        """Ids of live sessions, newest activity first (``since``/``until`` in microseconds).

        Reads every folder first (a full refresh), so it lists what other processes created
        a moment ago, as ``Store.sessions()`` always has.
        """
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise InvalidInput(f"limit must be a non-negative integer, not {limit!r}")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidInput(f"offset must be a non-negative integer, not {offset!r}")
        conds: list[str] = []
        params: list[Any] = []
        for column, value in (("user_id", user_id), ("org_id", org_id)):
            if value is not None:
                conds.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            conds.append("epoch_us(updated_at) >= ?")
            params.append(since)
        if until is not None:
            conds.append("epoch_us(updated_at) < ?")
            params.append(until)
        sql = "SELECT id FROM sessions"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY updated_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        if offset:
            sql += f" OFFSET {int(offset)}"
        with self._lock, self._failing("the sessions could not be listed"):
            self._sync()
            self._catch_up(explicit=True)
            catalog, _ = self._snapshot()
            return [r[0] for r in catalog.rows(sql, params)]

    def branch_parents(self) -> dict[str, str]:
        """``{branch id: parent id}`` for every live branch (after a full refresh)."""
        sql = "SELECT id, parent_session FROM sessions WHERE parent_session IS NOT NULL"
        with self._lock, self._failing("the branches could not be listed"):
            self._sync()
            self._catch_up(explicit=True)
            catalog, _ = self._snapshot()
            return {r[0]: r[1] for r in catalog.rows(sql, [])}


_READ_ONLY = "SQL over a store is read-only and sees only the catalog's tables: "


def _check_kind(statement: duckdb.Statement) -> None:
    """Refuse what is plainly not a query, with a message that says so."""
    try:
        kind = statement.type.name
    except ValueError:  # a statement type this version of the bindings has no name for
        kind = "UNKNOWN"
    if kind in _ALLOWED:
        return
    if kind == "LOAD":
        raise QueryError(
            _READ_ONLY + "extension loading (INSTALL, LOAD) is not allowed; "
            "query the tables with SELECT"
        )
    raise QueryError(
        f"{kind} statements are refused: the catalog is a read-only cache of the "
        "store's files. Query it with SELECT (or WITH, DESCRIBE, SHOW, SUMMARIZE); "
        "change data through the store API"
    )


def _refusal(e: duckdb.Error) -> str:
    """The message for a statement DuckDB refused: what it may not do, else its error."""
    first = _first_line(e)
    if isinstance(e, duckdb.PermissionException):
        return _READ_ONLY + f"file access and extensions are not allowed ({first})"
    if isinstance(e, duckdb.TransactionException) and "read-only" in first:
        return _READ_ONLY + f"writes are not allowed ({first})"
    if "configuration has been locked" in first:
        return _READ_ONLY + f"changing settings is not allowed ({first})"
    return f"SQL error: {first}"


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _is_damage(e: duckdb.Error, folder: Path) -> bool:
    """Whether a DuckDB error means a cache file is damaged rather than the query is wrong."""
    msg = str(e)
    if isinstance(e, (duckdb.IOException, duckdb.InternalException, duckdb.SerializationException)):
        return str(folder) in msg or "checksum" in msg.lower() or "corrupt" in msg.lower()
    return False


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _abandon(writer: Any) -> None:
    """Drop a writer whose work is being thrown away, keeping the original error."""
    try:
        writer.rollback()
        writer.wait_merging_threads()
    except BaseException:
        pass
