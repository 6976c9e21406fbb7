"""Where things live in a store folder, and the files that mark a folder as a store.

::

    <store>/
      convstore.json          format marker: {"format": "convstore", "version": 1}
      .gitignore              keeps .cache/ out of git
      .gitattributes          segments and sealed files are binary: git never merges inside them
      sessions/<session_id>/
        hot.<writer>.<seq>.jsonl.zst    hot segments, append-only, owned by one writer
        sealed.<writer>.<sha256>.parquet  sealed segments, immutable, named by their owner and
                                        content (format 1 wrote sealed.<sha256>.parquet)
      .cache/                 local and derived: never synced, safe to delete
        writer_id             this clone's writer identity
        locks/                per-session and store-wide lock files
        sealed-notes/         what compactions replaced, for the catalog (sealnotes.py)
        catalog/, index/      the query layer's derived caches
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
from pathlib import Path

from .errors import FormatVersionError, StoreError

FORMAT_NAME = "convstore"
FORMAT_VERSION = 2
# What a store of an older version needs to become the current one, by the version it leaves.
# Version 1 -> 2 converts no file: version 1's files are legal in version 2 (its sealed files,
# which name no owner, are read and never removed; FORMAT.md section 8). Only the marker changes,
# to the same bytes in every clone, so that clones that migrate apart merge without a conflict.
MIGRATIONS = {1: "2-owned-files"}
MARKER = "convstore.json"
SESSIONS = "sessions"
CACHE = ".cache"
GITIGNORE = "/.cache/\n"
GITATTRIBUTES = "*.zst binary\n*.parquet binary\n"

HOT_RE = re.compile(r"hot\.([a-z0-9]{8,32})\.(\d{6,})\.jsonl\.zst")
# Group 1 is the owner (None in a file written by format 1), group 2 the SHA-256 of the bytes.
SEALED_RE = re.compile(r"sealed\.(?:([a-z0-9]{8,32})\.)?([0-9a-f]{64})\.parquet")
WRITER_RE = re.compile(r"[a-z0-9]{8,32}")


def hot_name(writer: str, seq: int) -> str:
    return f"hot.{writer}.{seq:06d}.jsonl.zst"


def sealed_name(writer: str, digest: str) -> str:
    return f"sealed.{writer}.{digest}.parquet"


def owner(name: str) -> str | None:
    """The writer that owns a segment file, by its name: the only clone that may change or
    remove it. None for anything else, including format 1's sealed files (nobody owns those)."""
    m = HOT_RE.fullmatch(name) or SEALED_RE.fullmatch(name)
    return m.group(1) if m else None


def default_path() -> Path:
    """``$CONVSTORE_DIR``, else the platform's user data folder."""
    env = os.environ.get("CONVSTORE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("convstore", appauthor=False))


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (POSIX needs the directory fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and Windows) do not fsync directories
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file so that readers see the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def init_folder(root: Path) -> None:
    """Create the store's skeleton, or check that an existing folder is a store we can read."""
    marker = root / MARKER
    if marker.exists():
        read_marker(root)
    else:
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} exists and is not a folder; choose another store path")
        if root.exists() and any(p.name not in (".git", CACHE) for p in root.iterdir()):
            raise StoreError(
                f"{root} is a non-empty folder without {MARKER}; it is not a convstore store. "
                "Choose an empty or new folder"
            )
        root.mkdir(parents=True, exist_ok=True)
        body = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        write_atomic(marker, (json.dumps(body, indent=2) + "\n").encode())
    if not (root / SESSIONS).exists():
        (root / SESSIONS).mkdir(exist_ok=True)
        fsync_dir(root)
    for name, text in ((".gitignore", GITIGNORE), (".gitattributes", GITATTRIBUTES)):
        p = root / name
        if not p.exists():
            write_atomic(p, text.encode())
    (root / CACHE / "locks" / "sessions").mkdir(parents=True, exist_ok=True)


def read_marker(root: Path) -> int:
    marker = root / MARKER
    try:
        body = json.loads(marker.read_text("utf-8"))
        version = body["version"]
        if body.get("format") != FORMAT_NAME or not isinstance(version, int):
            raise ValueError("not a convstore marker")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(
            f"{marker} is unreadable ({e}); restore it from git or a backup, "
            f'or write {{"format": "convstore", "version": {FORMAT_VERSION}}}'
        ) from None
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{root} uses format version {version}; this convstore reads up to "
            f"{FORMAT_VERSION}. Upgrade convstore"
        )
    return version


def migrate(root: Path) -> bool:
    """Bring the marker of an older store to the current version; True if it changed.

    Called by the first write of a process (``Store.writer_id``), never by a reader. The new
    marker's bytes depend only on the version migrated from, so two clones that migrate while
    apart write the same file and git merges them without a conflict; running it twice is a
    no-op.
    """
    version = read_marker(root)
    if version >= FORMAT_VERSION:
        return False
    ran = [MIGRATIONS[v] for v in range(version, FORMAT_VERSION)]
    body = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "migrations": ran}
    write_atomic(root / MARKER, (json.dumps(body, indent=2) + "\n").encode())
    return True


def writer_id(root: Path) -> str:
    """This clone's writer identity, made once and kept in the local cache.

    It lives under .cache/ so that every git clone (which never receives .cache/) gets its own,
    and therefore its own hot segment files: two clones never write the same file. The file
    also records where it was made (``_place``): the device and inode of the .cache folder and
    the machine's identity. A copy of the store that kept .cache (cp -a, a restored backup, a
    block-level copy to another disk or machine, a mounted file system snapshot) differs in
    one of them, and so takes a new identity instead of writing the original's files.
    """
    cache = root / CACHE
    cache.mkdir(parents=True, exist_ok=True)
    place = _place(cache)
    path = cache / "writer_id"
    current = _read_writer_id(path, place)
    if current is not None:
        return current
    candidate = secrets.token_hex(6)
    tmp = path.with_name(f".writer_id.{candidate}.tmp")
    tmp.write_text(f"{candidate} {place}\n", "ascii")
    try:
        # link() fails if another process won the race; then its id is the one to use.
        os.link(tmp, path)
        return candidate
    except FileExistsError:
        current = _read_writer_id(path, place)
        if current is not None:
            return current
        os.replace(tmp, path)  # a stale or copied identity: replace it
        return candidate
    finally:
        tmp.unlink(missing_ok=True)


def _place(cache: Path) -> str:
    """Where this clone lives, as one token: inode and device of .cache, machine identity.

    The inode changes with a file-level copy; the device with a block-level copy to another
    disk or a mounted snapshot; the machine id and host name with a copy to another machine
    (or a cloned VM that was given its own identity). What stays undetectable is a copy
    that changes none of them: a VM cloned with its machine id and host name, or a file system
    rolled back on the same machine (SYNC.md, "Copies of a store").
    """
    st = os.stat(cache)
    machine = ""
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            machine = Path(candidate).read_text("ascii").strip()
            break
        except (OSError, UnicodeDecodeError):
            continue
    host = hashlib.sha256(f"{machine}\0{socket.gethostname()}".encode()).hexdigest()[:16]
    return f"{st.st_ino}:{st.st_dev}:{host}"


def _read_writer_id(path: Path, place: str) -> str | None:
    try:
        fields = path.read_text("ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) != 2 or not WRITER_RE.fullmatch(fields[0]):
        return None
    if fields[1] == place:
        return fields[0]
    if fields[1] == place.split(":")[0]:
        # Written by format 1, which recorded the inode alone. Same inode: the same clone, so
        # it keeps its identity (a new one would strand its segments; only their owner may
        # remove them) and records the rest of its place from now on.
        write_atomic(path, f"{fields[0]} {place}\n".encode())
        return fields[0]
    return None
