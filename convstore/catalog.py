"""The catalog: DuckDB tables of the current view of every session, shared by processes.

On disk, under ``<store>/.cache/catalog/`` (a derived cache, see docs/QUERY.md)::

    manifest.json                which base, which parts and which search index are current;
                                 replaced atomically, so a reader sees one state or the next
    base.<id>.duckdb             the bulk of the catalog; immutable once the manifest names it
    part.<id>.json               the changes one refresh made: keys removed, base rows masked ...
    part.<id>.<table>.parquet    ... and the rows it inserted or replaced

Why this shape (measured, docs/QUERY.md has the figures): DuckDB lets one process open a database
file read-write, and while it does no other process can open it at all, not even read-only;
opening one costs 15-50 ms. A single shared catalog file would therefore either bring back
"database is locked" or make every reader wait for every refresh. Instead nobody ever writes a
file that someone else may have open: the base is attached read-only by every process (any number
may), and each refresh publishes a small *part*. Every process keeps an in-memory DuckDB database
holding the parts in ``_delta`` tables; the public tables are views over "base rows not masked,
plus delta rows". When the parts grow, the refresher merges them into a new base file (a copy of
the old one with the parts applied) and publishes that; processes still attached to the old base
keep reading it until they next look at the manifest.

Every table has a key. Within the delta a row is replaced by key; a base row is hidden by its
``mask`` column (``_rk``, a dense integer, for messages: a hash anti-join on 64-bit integers costs
a few milliseconds over a million rows, on 26-character ids thirty).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from .errors import UnsafePath
from .layout import create_file, open_read, read_bytes, tighten_tree, write_atomic

CACHE_FORMAT = "convstore-cache"
# Bump whenever a table, a column, the part format or the search index schema changes: a cache of
# another version is rebuilt, never read.
CACHE_VERSION = 2

# Parts are folded into a new base when they hold more message rows than MAX_DELTA_ROWS or 5% of
# the base (rows of the small tables: half the base, see needs_rewrite), and into one part when
# there are more than MAX_PARTS of them (merge_parts): every query pays a little for each part
# (a hash anti-join against the masked rows), and a rewrite costs about 6 s per million messages.
MAX_PARTS = 64
MAX_DELTA_ROWS = 20_000
# Key lists longer than this go to DuckDB as a registered Arrow table, not as literals.
_BIG_LIST = 512

_TS = pa.timestamp("us", tz="UTC")
_JSON = "JSON"


@dataclass(frozen=True)
class Column:
    name: str
    sql: str
    arrow: pa.DataType


@dataclass(frozen=True)
class TableSpec:
    """One catalog table: its columns, its key within the delta, and the column that masks it."""

    name: str
    columns: tuple[Column, ...]
    key: str
    mask: str
    hidden: tuple[str, ...] = ()
    public: bool = True

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(c.name, c.arrow) for c in self.columns])

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _cols(*spec: tuple[str, str, pa.DataType]) -> tuple[Column, ...]:
    return tuple(Column(n, s, a) for n, s, a in spec)


SESSIONS = TableSpec(
    "sessions",
    _cols(
        ("id", "VARCHAR", pa.string()),
        ("title", "VARCHAR", pa.string()),
        ("user_id", "VARCHAR", pa.string()),
        ("org_id", "VARCHAR", pa.string()),
        ("agent_id", "VARCHAR", pa.string()),
        ("metadata", _JSON, pa.string()),
        ("parent_session", "VARCHAR", pa.string()),
        ("parent_message", "VARCHAR", pa.string()),
        ("created_at", "TIMESTAMPTZ", _TS),
        ("updated_at", "TIMESTAMPTZ", _TS),
        ("message_count", "INTEGER", pa.int32()),
        ("first_message_at", "TIMESTAMPTZ", _TS),
        ("last_message_at", "TIMESTAMPTZ", _TS),
        ("raw_bytes", "BIGINT", pa.int64()),
        ("disk_bytes", "BIGINT", pa.int64()),
    ),
    key="id",
    mask="id",
)

MESSAGES = TableSpec(
    "messages",
    _cols(
        ("_rk", "BIGINT", pa.int64()),
        ("id", "VARCHAR", pa.string()),
        ("session_id", "VARCHAR", pa.string()),
        ("role", "VARCHAR", pa.string()),
        ("text", "VARCHAR", pa.string()),
        ("parts", _JSON, pa.string()),
        ("metadata", _JSON, pa.string()),
        ("created_at", "TIMESTAMPTZ", _TS),
        ("edited_at", "TIMESTAMPTZ", _TS),
        ("day", "DATE", pa.date32()),
        ("hour", "TINYINT", pa.int8()),
        ("user_id", "VARCHAR", pa.string()),
        ("org_id", "VARCHAR", pa.string()),
        ("agent_id", "VARCHAR", pa.string()),
        ("model", "VARCHAR", pa.string()),
        ("tokens_in", "BIGINT", pa.int64()),
        ("tokens_out", "BIGINT", pa.int64()),
        ("chars", "INTEGER", pa.int32()),
    ),
    key="id",
    mask="_rk",
    hidden=("_rk",),
)

STATES = TableSpec(
    "states",
    _cols(
        ("id", "VARCHAR", pa.string()),
        ("session_id", "VARCHAR", pa.string()),
        ("created_at", "TIMESTAMPTZ", _TS),
        ("keys", "VARCHAR[]", pa.list_(pa.string())),
    ),
    key="id",
    mask="id",
)

CHECKPOINTS = TableSpec(
    "checkpoints",
    _cols(
        ("_key", "VARCHAR", pa.string()),
        ("session_id", "VARCHAR", pa.string()),
        ("namespace", "VARCHAR", pa.string()),
        ("checkpoint_id", "VARCHAR", pa.string()),
        ("parent_id", "VARCHAR", pa.string()),
        ("metadata", _JSON, pa.string()),
        ("created_at", "TIMESTAMPTZ", _TS),
        ("record_id", "VARCHAR", pa.string()),
    ),
    key="_key",
    mask="_key",
    hidden=("_key",),
)

FILES = TableSpec(
    "files",
    _cols(
        ("_key", "VARCHAR", pa.string()),
        ("session_id", "VARCHAR", pa.string()),
        ("name", "VARCHAR", pa.string()),
        ("kind", "VARCHAR", pa.string()),
        ("size", "BIGINT", pa.int64()),
        ("ingested", "BIGINT", pa.int64()),
        ("raw_bytes", "BIGINT", pa.int64()),
        ("records", "BIGINT", pa.int64()),
        ("closed", "BOOLEAN", pa.bool_()),
        ("inode", "BIGINT", pa.int64()),
    ),
    key="_key",
    mask="_key",
    hidden=("_key",),
)

# How far each session folder was read: its mtime when last listed, and when that was (for the
# racy-mtime rule of view.py). Internal: no public view.
FOLDERS = TableSpec(
    "folders",
    _cols(
        ("session_id", "VARCHAR", pa.string()),
        ("mtime_ns", "BIGINT", pa.int64()),
        ("listed_at_ns", "BIGINT", pa.int64()),
    ),
    key="session_id",
    mask="session_id",
    public=False,
)

TABLES: dict[str, TableSpec] = {
    t.name: t for t in (SESSIONS, MESSAGES, STATES, CHECKPOINTS, FILES, FOLDERS)
}
PUBLIC_TABLES = tuple(t.name for t in TABLES.values() if t.public)

Row = dict[str, Any]


class CacheInvalid(Exception):
    """The cache on disk cannot be used as it is (missing, damaged, other version or store)."""


# -- the manifest ---------------------------------------------------------------------------------


@dataclass
class Manifest:
    """What is current: one base file, the parts on top of it, one search index."""

    identity: str
    base: str
    index: str
    parts: list[str] = field(default_factory=list)
    seq: int = 0
    index_opstamp: int = 0
    delta_rows: int = 0
    # Message rows removed or replaced since the base was last written from scratch: their old
    # text may still sit in the base file, the parts and the index. When compaction or prune
    # removes it from the segments, the cache is rewritten so it is gone from there too.
    purge_debt: int = 0
    # Of delta_rows, those of the messages table (None: a manifest from before it was counted).
    message_rows: int | None = None

    @property
    def message_delta(self) -> int:
        return self.delta_rows if self.message_rows is None else self.message_rows

    def to_json(self) -> bytes:
        body = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "identity": self.identity,
            "base": self.base,
            "index": self.index,
            "parts": self.parts,
            "seq": self.seq,
            "index_opstamp": self.index_opstamp,
            "delta_rows": self.delta_rows,
            "purge_debt": self.purge_debt,
            "message_rows": self.message_rows,
        }
        return (json.dumps(body, indent=1) + "\n").encode()


def read_manifest(folder: Path, identity: str) -> Manifest:
    path = folder / "manifest.json"
    try:
        body = json.loads(read_bytes(path))
    except FileNotFoundError:
        raise CacheInvalid("no catalog yet") from None
    except (OSError, ValueError, UnsafePath) as e:
        raise CacheInvalid(f"{path} is unreadable: {e}") from None
    if not isinstance(body, dict) or body.get("format") != CACHE_FORMAT:
        raise CacheInvalid(f"{path} is not a convstore cache manifest")
    if body.get("version") != CACHE_VERSION:
        raise CacheInvalid(f"{path} is cache version {body.get('version')}, not {CACHE_VERSION}")
    if body.get("identity") != identity:
        raise CacheInvalid(f"{path} was made for another store folder")
    try:
        m = Manifest(
            identity=str(body["identity"]),
            base=str(body["base"]),
            index=str(body["index"]),
            parts=[str(p) for p in body["parts"]],
            seq=int(body["seq"]),
            index_opstamp=int(body["index_opstamp"]),
            delta_rows=int(body.get("delta_rows", 0)),
            purge_debt=int(body.get("purge_debt", 0)),
            message_rows=None if body.get("message_rows") is None else int(body["message_rows"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CacheInvalid(f"{path} lacks a field: {e}") from None
    for name in [m.base, m.index, *m.parts]:
        if "/" in name or "\\" in name or name.startswith("."):
            raise CacheInvalid(f"{path} names a file outside the cache: {name!r}")
    return m


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_atomic(folder / "manifest.json", manifest.to_json())
    # Every publish passes here: tighten what DuckDB and tantivy created with their own modes.
    tighten_tree(folder)
    tighten_tree(folder.parent / "index")


def new_name(seq: int) -> str:
    """A unique, sortable file id: two refreshers can never pick the same one."""
    return f"{seq:09d}-{secrets.token_hex(3)}"


# -- changes --------------------------------------------------------------------------------------


@dataclass
class TableChanges:
    """The changes to one table made by one refresh."""

    rows: list[Row] = field(default_factory=list)  # inserted or replaced, by key
    removed: set[Any] = field(default_factory=set)  # keys dropped from the delta
    masks: set[Any] = field(default_factory=set)  # base rows hidden, by mask value

    def __bool__(self) -> bool:
        return bool(self.rows or self.removed or self.masks)


# -- the catalog ----------------------------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Catalog:
    """This process's view of the shared catalog: the base attached read-only plus the parts.

    Not thread-safe by itself; ``QueryLayer`` serialises calls.
    """

    BASE = "_base"
    DELTA = "_delta"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.con = duckdb.connect(":memory:")
        # Days and hours in SQL are UTC, like every timestamp the store writes.
        self.run("SET TimeZone = 'UTC'")
        self.manifest: Manifest | None = None
        self._manifest_stat: tuple[int, int, int] | None = None
        self._attached: str | None = None
        self._loaded_parts: list[str] = []
        self._masked: dict[str, bool] = {}
        self._view_shape: tuple[bool, ...] | None = None
        self._base_rows: int | None = None
        # Mirrors of the delta tables' keys and masks, so that applying a part runs only the
        # statements it needs (each costs about a millisecond).
        self._delta_keys: dict[str, set[Any]] = {}
        self._mask_values: dict[str, set[Any]] = {}
        self._registered = 0  # names given to Arrow tables registered for one statement
        # The connection user SQL runs on (``user_connection``), made on demand.
        self._user: duckdb.DuckDBPyConnection | None = None
        self._user_views: tuple[bool, ...] | None = None
        self._user_databases: list[tuple[Any, ...]] = []
        # Filled by ingest.load_positions; parts applied afterwards are logged for it to replay.
        self.positions: dict[str, Any] | None = None
        self.position_log: list[tuple[str, list[Any], list[Row]]] = []
        self.delta_rows = 0

    # -- opening ----------------------------------------------------------------------------

    def close(self) -> None:
        self.drop_user_connection()
        with contextlib.suppress(duckdb.Error):
            self.con.close()

    def _manifest_key(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.folder / "manifest.json")
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed_on_disk(self) -> bool:
        """True when another process published a new manifest (one ``stat``)."""
        return self._manifest_key() != self._manifest_stat

    def load(self, manifest: Manifest) -> None:
        """Make ``manifest`` current: attach its base if it is new, then load its parts.

        A failure leaves nothing half-loaded: the next load starts from the base again.
        """
        key = self._manifest_key()
        try:
            if self._attached != manifest.base:
                self._attach(manifest.base)
                self._loaded_parts = []
            if self._loaded_parts != manifest.parts[: len(self._loaded_parts)]:
                self._reset_delta()
                self._loaded_parts = []
            for name in manifest.parts[len(self._loaded_parts) :]:
                self._load_part(name)
                self._loaded_parts.append(name)
        except BaseException:
            self._forget()
            raise
        self.manifest = manifest
        self._manifest_stat = key
        self._make_views()

    def current(self) -> Manifest:
        """The loaded manifest (CacheInvalid when a failed load left none)."""
        if self.manifest is None:
            raise CacheInvalid(f"no catalog snapshot of {self.folder} is loaded")
        return self.manifest

    def _forget(self) -> None:
        """Drop the snapshot (after a failed load), so that the next load starts afresh."""
        self.drop_user_connection()
        if self._attached is not None:
            with contextlib.suppress(duckdb.Error):
                self.run(f"DETACH {self.BASE}")
        self._attached = None
        self._view_shape = None
        self._loaded_parts = []
        self.manifest = None
        self._manifest_stat = None
        self.positions = None
        self.position_log = []

    def _attach(self, base: str) -> None:
        path = self.folder / base
        if path.is_symlink() or not path.is_file():  # DuckDB would follow a link
            raise CacheInvalid(f"catalog base {path} is missing or a link")
        self.drop_user_connection()  # it holds the old base: the next user query makes anew
        if self._attached is not None:
            self.run(f"DETACH {self.BASE}")
            self._attached = None
            self._view_shape = None
        try:
            self.run(f"ATTACH {_sql_str(str(path))} AS {self.BASE} (READ_ONLY)")
        except duckdb.Error as e:
            raise CacheInvalid(f"catalog base {path} cannot be opened: {e}") from None
        self._attached = base
        self._base_rows = None
        try:
            meta = dict(self.run(f"SELECT key, value FROM {self.BASE}.meta"))
            names = {
                r[0]
                for r in self.run(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = ?",
                    [self.BASE],
                )
            }
        except duckdb.Error as e:
            raise CacheInvalid(f"catalog base {path} is damaged: {e}") from None
        if meta.get("version") != str(CACHE_VERSION) or meta.get("base") != base:
            raise CacheInvalid(f"catalog base {path} does not match the manifest")
        missing = set(TABLES) - names
        if missing:
            raise CacheInvalid(f"catalog base {path} lacks tables {sorted(missing)}")
        self._reset_delta()

    def _reset_delta(self) -> None:
        self.drop_user_connection()
        for sql in self._delta_ddl():
            self.run(sql)
        for spec in TABLES.values():
            self._masked[spec.name] = False
            self._delta_keys[spec.name] = set()
            self._mask_values[spec.name] = set()
        self.delta_rows = 0
        self.positions = None
        self.position_log = []

    def _delta_ddl(self) -> list[str]:
        out = [f"CREATE SCHEMA IF NOT EXISTS {self.DELTA}"]
        for spec in TABLES.values():
            cols = ", ".join(f"{_q(c.name)} {c.sql}" for c in spec.columns)
            out.append(f"CREATE OR REPLACE TABLE {self.DELTA}.{spec.name} ({cols})")
            mask_type = spec.column(spec.mask).sql
            out.append(f"CREATE OR REPLACE TABLE {self.DELTA}.{spec.name}_mask (m {mask_type})")
        return out

    def _make_views(self) -> None:
        shape = tuple(self._masked[t] for t in TABLES)
        if shape != self._view_shape:  # the views only change when a table gains its first mask
            self._view_shape = shape
            for sql in self._view_ddl():
                self.run(sql)
        if self._user is not None and self._user_views != shape:
            self._on_user(self._view_ddl())
            self._user_views = shape

    def _view_ddl(self) -> list[str]:
        out = []
        for spec in TABLES.values():
            if not spec.public:
                continue
            cols = ", ".join(_q(c) for c in spec.names if c not in spec.hidden)
            base = f"SELECT {cols} FROM {self.BASE}.{spec.name}"
            if self._masked[spec.name]:
                base += (
                    f" b WHERE NOT EXISTS (SELECT 1 FROM {self.DELTA}.{spec.name}_mask x "
                    f"WHERE x.m = b.{_q(spec.mask)})"
                )
            out.append(
                f"CREATE OR REPLACE VIEW main.{spec.name} AS {base} "
                f"UNION ALL SELECT {cols} FROM {self.DELTA}.{spec.name}"
            )
        return out

    def base_rows(self, table: str, where: str = "", params: Sequence[Any] = ()) -> str:
        """SQL for the live base rows of ``table`` (masked ones left out), all columns."""
        spec = TABLES[table]
        sql = f"SELECT * FROM {self.BASE}.{table} b"
        conds = []
        if self._masked[table]:
            conds.append(
                f"NOT EXISTS (SELECT 1 FROM {self.DELTA}.{table}_mask x "
                f"WHERE x.m = b.{_q(spec.mask)})"
            )
        if where:
            conds.append(where)
        return sql + (" WHERE " + " AND ".join(conds) if conds else "")

    def live_rows(self, table: str, where: str = "", delta_where: str | None = None) -> str:
        """SQL for every live row of ``table`` (hidden columns included), base and delta;
        ``delta_where`` filters the delta rows when it must differ from ``where``."""
        dw = where if delta_where is None else delta_where
        tail = f" WHERE {dw}" if dw else ""
        return f"{self.base_rows(table, where)} UNION ALL SELECT * FROM {self.DELTA}.{table}{tail}"

    # -- parts ------------------------------------------------------------------------------

    def _part_path(self, name: str) -> Path:
        return self.folder / f"part.{name}.arrows"

    def _load_part(self, name: str) -> None:
        path = self._part_path(name)
        try:
            data = read_bytes(path)
            head_len = int.from_bytes(data[:4], "little")
            head = json.loads(data[4 : 4 + head_len])
            tables = head["tables"]
            start = 4 + head_len
            for table, change in tables.items():
                spec = TABLES.get(table)
                if spec is None:
                    raise CacheInvalid(f"catalog part {path} names an unknown table {table!r}")
                rows = None
                if change["rows"]:
                    offset, length = change["rows"]
                    buf = pa.py_buffer(data[start + offset : start + offset + length])
                    rows = pa.ipc.open_stream(buf).read_all()
                self._apply(spec, change["removed"], change["masks"], rows)
        except CacheInvalid:
            raise
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            pa.ArrowException,
            duckdb.Error,
            UnsafePath,
        ) as e:
            raise CacheInvalid(f"catalog part {path} is unreadable: {e}") from None

    def _apply(
        self, spec: TableSpec, removed: list[Any], masks: list[Any], rows: pa.Table | None
    ) -> None:
        """Apply one table's changes to the delta tables, in one round trip to DuckDB."""
        delta = f"{self.DELTA}.{spec.name}"
        keys = self._delta_keys[spec.name]
        new_keys = [] if rows is None else rows.column(spec.key).to_pylist()
        statements = []
        drop = [k for k in (*removed, *new_keys) if k in keys]
        seen = self._mask_values[spec.name]
        fresh = [m for m in masks if m not in seen]
        if spec.name in ("folders", "files") and self.positions is not None:
            self.position_log.append(
                (spec.name, list(removed), [] if rows is None else rows.to_pylist())
            )
        mirror = self._user is not None
        with contextlib.ExitStack() as registered:
            if drop:
                where = registered.enter_context(self.in_keys(spec.key, drop, mirror=mirror))
                statements.append(f"DELETE FROM {delta} WHERE {where}")
            if len(fresh) > _BIG_LIST:
                name = registered.enter_context(self._key_table(fresh, mirror=mirror))
                statements.append(f"INSERT INTO {delta}_mask SELECT k FROM {name}")
            elif fresh:
                values = ", ".join(f"({_literal(m)})" for m in fresh)
                statements.append(f"INSERT INTO {delta}_mask VALUES {values}")
            if rows is not None and rows.num_rows > 0:
                name = registered.enter_context(self._key_table(rows, mirror=mirror))
                statements.append(f"INSERT INTO {delta} SELECT * FROM {name}")
            if statements:
                self.run(";\n".join(statements))
                if mirror:
                    self._on_user([";\n".join(statements)])
        keys.difference_update(drop)
        if fresh:
            seen.update(fresh)
            self._masked[spec.name] = True
        if rows is not None:
            keys.update(new_keys)
            self.delta_rows += rows.num_rows
        self.delta_rows += len(fresh)

    @contextlib.contextmanager
    def in_keys(self, column: str, keys: Sequence[Any], *, mirror: bool = False) -> Iterator[str]:
        """``column IN (...)`` for a ``with`` block: literal keys for a short list (DuckDB looks
        them up in the id index), a registered Arrow table for a long one (40,000 literal keys
        cost DuckDB 0.45 s to parse and plan, a table 8 ms). ``mirror``: the user connection
        can read it too."""
        if len(keys) <= _BIG_LIST:
            yield in_list(column, keys)
            return
        with self._key_table(keys, mirror=mirror) as name:
            yield f"{_q(column)} IN (SELECT k FROM {name})"

    @contextlib.contextmanager
    def _key_table(
        self, values: Sequence[Any] | pa.Table, *, mirror: bool = False
    ) -> Iterator[str]:
        """``values`` (a column ``k``, or a table as it is) registered under a fresh name."""
        self._registered += 1
        name = f"_registered_{self._registered}"
        table = values if isinstance(values, pa.Table) else pa.table({"k": list(values)})
        cons = [self.con]
        if mirror and self._user is not None:
            cons.append(self._user)
        for con in cons:
            con.register(name, table)
        try:
            yield name
        finally:
            for con in cons:
                with contextlib.suppress(duckdb.Error):
                    con.unregister(name)

    # -- the connection user SQL runs on --------------------------------------------------

    def user_connection(self) -> duckdb.DuckDBPyConnection:
        """A connection that sees the public tables and nothing else, for user SQL.

        A DuckDB database of its own: its configuration (files, settings, extensions) is
        per database, and the catalog's own connection must keep writing cache files. It
        attaches this snapshot's base read-only and holds a copy of the delta tables, which
        every later change is mirrored into. Then external access and the local file system
        are switched off (no file is read or written, no extension installed or loaded) and
        the configuration locked.
        Run each user statement in a read-only transaction on a cursor of it (``QueryLayer``
        does): DuckDB then refuses every write. Made anew for a new base.
        """
        if self._user is not None:
            return self._user
        assert self._attached is not None
        con = duckdb.connect(
            ":memory:",
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "allow_persistent_secrets": False,
                # SQL must not read the caller's Python variables (DataFrames, tables) by name.
                "python_enable_replacements": False,
            },
        )
        try:
            con.execute("SET TimeZone = 'UTC'")
            path = self.folder / self._attached
            con.execute(f"ATTACH {_sql_str(str(path))} AS {self.BASE} (READ_ONLY)")
            for sql in self._delta_ddl():
                con.execute(sql)
            for spec in TABLES.values():
                for table in (f"{self.DELTA}.{spec.name}", f"{self.DELTA}.{spec.name}_mask"):
                    rows = self.con.sql(f"SELECT * FROM {table}").to_arrow_table()
                    if rows.num_rows:
                        con.register("_copy", rows)
                        con.execute(f"INSERT INTO {table} SELECT * FROM _copy")
                        con.unregister("_copy")
            for sql in self._view_ddl():
                con.execute(sql)
            # Order matters: the lock comes last. With external access off DuckDB still lets
            # SQL read the files of attached databases (read_blob of the base): the local
            # file system goes too. The base stays readable through the handle already open.
            con.execute("SET allow_extension_repositories = 'forbidden'")
            con.execute("SET enable_external_access = false")
            con.execute("SET disabled_filesystems = 'LocalFileSystem'")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        self._user = con
        self._user_views = tuple(self._masked[t] for t in TABLES)
        self._user_databases = self.user_databases(con)
        return con

    @staticmethod
    def user_databases(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
        return con.execute(
            "SELECT database_name, path, readonly FROM duckdb_databases() ORDER BY 1"
        ).fetchall()

    def user_connection_intact(self) -> bool:
        """Whether the user connection still has exactly the databases it was made with.

        A read-only transaction does not stop ATTACH and DETACH (they change no database's
        contents): a statement that ran one leaves a connection that is thrown away."""
        return self._user is None or self.user_databases(self._user) == self._user_databases

    def drop_user_connection(self) -> None:
        con, self._user = self._user, None
        self._user_views = None
        if con is not None:
            with contextlib.suppress(duckdb.Error):
                con.close()

    def _on_user(self, statements: list[str]) -> None:
        """Mirror statements into the user connection; a failure drops it (it is remade)."""
        assert self._user is not None
        try:
            for sql in statements:
                self._user.execute(sql)
        except duckdb.Error:
            self.drop_user_connection()

    def publish(
        self, changes: Mapping[str, TableChanges], index_opstamp: int, purge_debt: int = 0
    ) -> None:
        """Write one part holding ``changes``, publish it, and apply it here.

        Called under the store-wide refresh lock. A part is one file (a JSON header, then an
        Arrow IPC stream of rows per table), fsynced before the manifest names it: a
        manifest never points at a file that a crash could leave half-written.
        """
        m = self.current()
        name = new_name(m.seq + 1)
        arrows = {
            table: pa.Table.from_pylist(change.rows, schema=TABLES[table].schema)
            for table, change in changes.items()
            if change.rows
        }
        self._write_part(
            name,
            {
                table: (sorted(change.removed), sorted(change.masks), arrows.get(table))
                for table, change in changes.items()
                if change
            },
        )
        msgs = changes.get("messages")
        new = Manifest(
            identity=m.identity,
            base=m.base,
            index=m.index,
            parts=[*m.parts, name],
            seq=m.seq + 1,
            index_opstamp=index_opstamp,
            delta_rows=m.delta_rows + sum(len(c.rows) + len(c.masks) for c in changes.values()),
            purge_debt=m.purge_debt + purge_debt,
            message_rows=m.message_delta + (len(msgs.rows) + len(msgs.masks) if msgs else 0),
        )
        write_manifest(self.folder, new)
        for table, change in changes.items():
            if change:
                self._apply(
                    TABLES[table], list(change.removed), list(change.masks), arrows.get(table)
                )
        self._loaded_parts.append(name)
        self.manifest = new
        self._manifest_stat = self._manifest_key()
        self._make_views()

    def _write_part(
        self, name: str, tables: Mapping[str, tuple[list[Any], list[Any], pa.Table | None]]
    ) -> None:
        """Write a part file: a JSON header, then an Arrow IPC stream of rows per table, each
        table's change being (keys removed, mask values added, rows)."""
        head: dict[str, Any] = {"tables": {}}
        blobs: list[bytes] = []
        size = 0
        for table, (removed, masks, rows) in tables.items():
            entry: dict[str, Any] = {"removed": removed, "masks": masks, "rows": None}
            if rows is not None and rows.num_rows:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, rows.schema) as writer:
                    writer.write_table(rows)
                blob = sink.getvalue().to_pybytes()
                entry["rows"] = [size, len(blob)]
                blobs.append(blob)
                size += len(blob)
            head["tables"][table] = entry
        header = orjson.dumps(head)
        _write_file(
            self._part_path(name), len(header).to_bytes(4, "little") + header + b"".join(blobs)
        )

    def needs_merge(self) -> bool:
        return self.manifest is not None and len(self.manifest.parts) > MAX_PARTS

    def merge_parts(self) -> None:
        """Fold every part into one, holding what the delta tables hold (under the lock).

        Many parts cost each process a file read when it loads them, so they are kept few;
        folding them into the base instead would rewrite every message (about 10 s and
        gigabytes at a million messages) every MAX_PARTS refreshes. This costs what the parts
        hold. Other processes see parts that do not extend the ones they loaded, and load the
        merged one from scratch (``load``).
        """
        m = self.current()
        name = new_name(m.seq + 1)
        tables: dict[str, tuple[list[Any], list[Any], pa.Table | None]] = {}
        counts: dict[str, int] = {}
        for spec in TABLES.values():
            delta = f"{self.DELTA}.{spec.name}"
            names = ", ".join(_q(n) for n in spec.names)
            rows = self.con.sql(f"SELECT {names} FROM {delta}").to_arrow_table().cast(spec.schema)
            masks = sorted(r[0] for r in self.run(f"SELECT m FROM {delta}_mask"))
            tables[spec.name] = ([], masks, rows)
            counts[spec.name] = rows.num_rows + len(masks)
        self._write_part(name, tables)
        new = Manifest(
            identity=m.identity,
            base=m.base,
            index=m.index,
            parts=[name],
            seq=m.seq + 1,
            index_opstamp=m.index_opstamp,
            delta_rows=sum(counts.values()),
            purge_debt=m.purge_debt,
            message_rows=counts["messages"],
        )
        write_manifest(self.folder, new)
        self._loaded_parts = [name]
        self.manifest = new
        self._manifest_stat = self._manifest_key()
        self.collect_garbage()

    def set_index_opstamp(self, opstamp: int) -> None:
        """Record a search-index commit that changed no catalog row (stale documents removed)."""
        m = self.current()
        m2 = Manifest(
            m.identity,
            m.base,
            m.index,
            list(m.parts),
            m.seq + 1,
            opstamp,
            m.delta_rows,
            m.purge_debt,
            m.message_rows,
        )
        write_manifest(self.folder, m2)
        self.manifest = m2
        self._manifest_stat = self._manifest_key()

    # -- merging parts into a new base ------------------------------------------------------

    def needs_rewrite(self, base_rows: int | None = None) -> bool:
        """Whether the parts have grown enough to fold them into a new base."""
        m = self.manifest
        if m is None or not m.parts:
            return False
        limit = max(MAX_DELTA_ROWS, (base_rows or 0) // 20)
        # Rows of the small tables (sessions, files, folders) cost a query little: they may
        # reach half the base. A compaction of every session rewrites three small rows per
        # session and no message, and folding that in would rewrite every message (measured at
        # a million messages: 9.8 s and 2.6 GB, for rows that a process loads in ~0.1 s).
        small = m.delta_rows - m.message_delta
        return m.message_delta > limit or small > max(limit, (base_rows or 0) // 2)

    def base_message_count(self) -> int:
        if self._base_rows is None:  # the base never changes once attached
            self._base_rows = int(self.run(f"SELECT count(*) FROM {self.BASE}.messages")[0][0])
        return self._base_rows

    def rewrite(self, index: str | None = None, index_opstamp: int | None = None) -> None:
        """Write a new base from the live rows and publish it with no parts (under the lock).

        A fresh file, not a copy with rows deleted: DuckDB leaves deleted rows' bytes in its
        blocks, and the point of a rewrite is also to make removed text leave the cache. It
        costs about 6 s per million messages; it runs when the parts grow past a limit and
        when compaction or prune purged text the cache still held. ``index`` switches the
        search index in the same publish.
        """
        m = self.current()
        base_name = f"base.{new_name(m.seq + 1)}.duckdb"
        tmp = self.folder / f".{base_name}.tmp"
        tmp.unlink(missing_ok=True)
        alias = "_rewrite"
        self.run(f"ATTACH {_sql_str(str(tmp))} AS {alias}")
        try:
            for spec in TABLES.values():
                cols = ", ".join(f"{_q(c.name)} {c.sql}" for c in spec.columns)
                self.run(f"CREATE TABLE {alias}.{spec.name} ({cols})")
                names = [_q(c) for c in spec.names]
                if spec.name == "messages":
                    select = ", ".join("row_number() OVER ()" if c == '"_rk"' else c for c in names)
                else:
                    select = ", ".join(names)
                self.run(
                    f"INSERT INTO {alias}.{spec.name} SELECT {select} "
                    f"FROM ({self.live_rows(spec.name)})"
                )
            finish_base(self, alias, base_name)
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                self.run(f"DETACH {alias}")
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.folder / base_name)
        new = Manifest(
            m.identity,
            base_name,
            m.index if index is None else index,
            [],
            m.seq + 1,
            m.index_opstamp if index_opstamp is None else index_opstamp,
            0,
            0,
            0,
        )
        write_manifest(self.folder, new)
        self.load(new)
        self.collect_garbage()

    def collect_garbage(self) -> None:
        """Delete catalog files the manifest no longer names (under the refresh lock).

        A process still attached to an old base keeps reading it: on POSIX an open file
        outlives its name. A process that was about to load a deleted part sees it missing,
        rereads the manifest and loads what is current instead.
        """
        m = self.manifest
        if m is None:
            return
        keep = {"manifest.json", m.base}
        keep.update(self._part_path(p).name for p in m.parts)
        for entry in os.scandir(self.folder):
            if entry.name in keep or entry.name.endswith(".lock"):
                continue
            # In use (Windows) or already gone: the next collection retries.
            with contextlib.suppress(OSError):
                os.unlink(entry.path)

    # -- lookups ----------------------------------------------------------------------------

    def message_texts(self, ids: Sequence[str]) -> dict[str, str]:
        """The texts of the live messages among ``ids`` (search hits).

        Not through the ``messages`` view: its anti-join and its union with the delta cost
        more than the lookup itself (about 2 ms against 1 at a million messages). The base is
        read through its id index, rows the delta masks are dropped here, and the delta is
        asked only for ids it holds (this process mirrors its keys and masks).
        """
        if not ids:
            return {}
        masked = self._mask_values["messages"]
        out: dict[str, str] = {}
        for rk, mid, text in self.run(
            f"SELECT _rk, id, text FROM {self.BASE}.messages WHERE {in_list('id', ids)}"
        ):
            if rk not in masked:
                out[mid] = text
        held = self._delta_keys["messages"]
        in_delta = [i for i in ids if i in held]
        if in_delta:
            out.update(
                self.run(
                    f"SELECT id, text FROM {self.DELTA}.messages WHERE {in_list('id', in_delta)}"
                )
            )
        return out

    def run(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a statement and fetch all it returns (DuckDB wants every result consumed
        before the connection runs anything else)."""
        return self.con.execute(sql, params).fetchall()

    rows = run


class BaseBuilder:
    """Writes a complete base file from Arrow batches, for a cold rebuild."""

    def __init__(self, catalog: Catalog, base_name: str) -> None:
        self.catalog = catalog
        self.base_name = base_name
        self.tmp = catalog.folder / f".{base_name}.tmp"
        self.tmp.unlink(missing_ok=True)
        self.alias = "_build"
        self._next_rk = 1
        self.catalog.run(f"ATTACH {_sql_str(str(self.tmp))} AS {self.alias}")
        for spec in TABLES.values():
            cols = ", ".join(f"{_q(c.name)} {c.sql}" for c in spec.columns)
            self.catalog.run(f"CREATE TABLE {self.alias}.{spec.name} ({cols})")
        # One transaction for the whole load: DuckDB then writes the rows straight into the
        # file's blocks at commit instead of through its WAL, one fsync per batch (measured:
        # half of a cold build's time went there).
        self.catalog.run("BEGIN TRANSACTION")

    def add_arrow(self, table: str, rows: pa.Table) -> None:
        """Add rows in Arrow form (messages get their dense ``_rk`` keys here)."""
        if not rows.num_rows:
            return
        if table == "messages":
            keys = pa.array(range(self._next_rk, self._next_rk + rows.num_rows), pa.int64())
            rows = rows.set_column(0, "_rk", keys)
            self._next_rk += rows.num_rows
        con = self.catalog.con
        con.register("_build_rows", rows.cast(TABLES[table].schema))
        try:
            self.catalog.run(f"INSERT INTO {self.alias}.{table} SELECT * FROM _build_rows")
        finally:
            con.unregister("_build_rows")

    def finish(self) -> None:
        self.catalog.run("COMMIT")
        finish_base(self.catalog, self.alias, self.base_name)
        os.replace(self.tmp, self.catalog.folder / self.base_name)

    def abort(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.catalog.run("ROLLBACK")
        with contextlib.suppress(duckdb.Error):
            self.catalog.run(f"DETACH {self.alias}")
        self.tmp.unlink(missing_ok=True)


def finish_base(catalog: Catalog, alias: str, base_name: str) -> None:
    """Index, label, checkpoint and detach a base being written as ``alias``; fsync it."""
    # An ART index on message ids makes the text lookups of search hits point reads
    # (1-3 ms for twenty random hits among a million rows, against 100+ ms for a scan).
    catalog.run(f"CREATE INDEX messages_id ON {alias}.messages (id)")
    catalog.run(f"CREATE TABLE {alias}.meta (key VARCHAR, value VARCHAR)")
    catalog.run(
        f"INSERT INTO {alias}.meta VALUES ('version', ?), ('base', ?)",
        [str(CACHE_VERSION), base_name],
    )
    catalog.run(f"CHECKPOINT {alias}")
    path = catalog.run("SELECT path FROM duckdb_databases() WHERE database_name = ?", [alias])[0][0]
    catalog.run(f"DETACH {alias}")
    _fsync_file(Path(path))


# -- small file helpers ---------------------------------------------------------------------------


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _literal(value: Any) -> str:
    """A key as a SQL literal (keys are strings or integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"not a key: {value!r}")
    return str(value) if isinstance(value, int) else _sql_str(value)


def in_list(column: str, values: Iterable[Any]) -> str:
    """``column IN (...)`` with literal keys (FALSE for none)."""
    items = list(values)
    return f"{_q(column)} IN ({_literals(items)})" if items else "FALSE"


def _literals(values: Iterable[Any]) -> str:
    # Literal lists, not a bound list parameter: DuckDB turns "IN (literals)" into index
    # lookups and prunes with them, where "= ANY($1)" costs it twice as long.
    return ", ".join(_literal(v) for v in values)


def _fsync_file(path: Path) -> None:
    with open_read(path) as fh:
        os.fsync(fh.fileno())


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with create_file(tmp) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
