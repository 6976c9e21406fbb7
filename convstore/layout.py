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

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import FormatVersionError, StoreError, UnsafePath

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


# -- private files, no links (docs/FORMAT.md, "Modes and symbolic links") -------------------------

FILE_MODE = 0o600
DIR_MODE = 0o700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def link_refused(path: Path | str, fix: str = "") -> UnsafePath:
    return UnsafePath(
        f"{path} is a symbolic link, and convstore never follows links inside a store; "
        + (fix or "remove the link (`convstore check --repair` does)")
    )


def _refusal(path: Path | str, e: OSError) -> UnsafePath | None:
    """The refusal an ELOOP/ENOTDIR from an O_NOFOLLOW open stands for, if ``path`` is a link."""
    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and os.path.islink(path):
        return link_refused(path)
    return None


def open_fd(path: Path | str, flags: int, mode: int = FILE_MODE) -> int:
    """``os.open`` that never follows a link in the last component (UnsafePath instead).

    A file opened with O_CREAT ends 0600 whatever the umask, and so does an existing one (a git
    checkout makes them 0644): the writer that opens it tightens it for one fstat.
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as e:
        refusal = _refusal(path, e)
        if refusal is not None:
            raise refusal from None
        raise
    if flags & os.O_CREAT:
        tighten_fd(fd, FILE_MODE)
    return fd


def tighten_fd(fd: int, mode: int) -> None:
    st = os.fstat(fd)
    if stat.S_IMODE(st.st_mode) != mode:
        with contextlib.suppress(PermissionError):  # not our file: check() reports it
            os.fchmod(fd, mode)


def open_read(path: Path | str) -> BinaryIO:
    return os.fdopen(open_fd(path, os.O_RDONLY), "rb")


def read_bytes(path: Path | str) -> bytes:
    with open_read(path) as fh:
        return fh.read()


def create_file(path: Path | str) -> BinaryIO:
    """A new (or truncated) private file, never through a link."""
    return os.fdopen(open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb")


def open_dir(path: Path | str) -> int:
    """A descriptor on a folder of the store, refusing a link (UnsafePath)."""
    try:
        return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as e:
        refusal = _refusal(path, e)
        if refusal is not None:
            raise refusal from None
        raise


def list_names(folder: Path | str) -> list[str]:
    """The entries of a store folder that are not links (a link is never read; check()
    reports it). UnsafePath if the folder itself is a link; FileNotFoundError if it is gone."""
    fd = open_dir(folder)
    try:
        with os.scandir(fd) as entries:
            return [e.name for e in entries if not e.is_symlink()]
    finally:
        os.close(fd)


def private_dir(path: Path, *, below: Path, fix: str = "") -> bool:
    """Make every folder from ``below`` (exclusive) down to ``path`` a real folder, mode 0700:
    create the missing ones, tighten looser ones, refuse links (UnsafePath). True if any was
    created. mkdir's mode is narrowed by the umask, never widened; the descriptor-based chmod
    cannot be sent elsewhere by a link swapped in after the check."""
    created = False
    current = below
    for part in path.relative_to(below).parts:
        current = current / part
        try:
            os.mkdir(current, DIR_MODE)
            created = True
        except FileExistsError:
            pass
        try:
            fd = open_dir(current)
        except UnsafePath:
            raise link_refused(current, fix) from None
        try:
            tighten_fd(fd, DIR_MODE)
        finally:
            os.close(fd)
    return created


def tighten_tree(folder: Path) -> None:
    """Folders 0700 and files 0600 below ``folder``, links and ``.git`` (git's) skipped: for
    what DuckDB and tantivy write themselves (0666 or 0644 less the umask), whose folders are
    0700 from creation, so no other user can reach those files before this runs; and for
    what a git merge brings."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        try:
            if entry.is_symlink() or entry.name == ".git":
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            want = DIR_MODE if is_dir else FILE_MODE
            if stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode) != want:
                os.chmod(entry.path, want)
        except (FileNotFoundError, PermissionError):
            continue  # gone since the listing (a merge, a collection), or not ours
        if is_dir:
            tighten_tree(Path(entry.path))


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
    with create_file(tmp) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def init_folder(root: Path) -> None:
    """Create the store's skeleton, or check that an existing folder is a store we can read.

    The root may be reached through a link the user chose (``~/chats -> /data/chats``);
    nothing below it may be a link (UnsafePath).
    """
    marker = root / MARKER
    if os.path.lexists(marker):
        read_marker(root)
    else:
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} exists and is not a folder; choose another store path")
        if root.exists() and any(p.name not in (".git", CACHE) for p in root.iterdir()):
            raise StoreError(
                f"{root} is a non-empty folder without {MARKER}; it is not a convstore store. "
                "Choose an empty or new folder"
            )
        root.parent.mkdir(parents=True, exist_ok=True)  # the user's folders: their modes
        with contextlib.suppress(FileExistsError):
            os.mkdir(root, DIR_MODE)
        body = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        write_atomic(marker, (json.dumps(body, indent=2) + "\n").encode())
    # The root: once it is 0700 no other user reaches anything below it, whatever the
    # modes a git clone gave the files (check reports those). One stat on each open.
    if stat.S_IMODE(os.stat(root).st_mode) != DIR_MODE:
        with contextlib.suppress(PermissionError):
            os.chmod(root, DIR_MODE)
    fix = "remove the link (if its target holds sessions, move that folder in its place)"
    if private_dir(root / SESSIONS, below=root, fix=fix):
        fsync_dir(root)
    for name, text in ((".gitignore", GITIGNORE), (".gitattributes", GITATTRIBUTES)):
        p = root / name
        if not os.path.lexists(p):
            write_atomic(p, text.encode())
    # Lock files made through a link would sit wherever it points, where another user could
    # hold them: refused. .cache is derived, so removing the link loses nothing.
    fix = "remove the link (.cache holds only derived data, rebuilt on use)"
    private_dir(root / CACHE / "locks" / "sessions", below=root, fix=fix)


def read_marker(root: Path) -> int:
    marker = root / MARKER
    try:
        body = json.loads(read_bytes(marker).decode("utf-8"))
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
    private_dir(cache, below=root)
    place = _place(cache)
    path = cache / "writer_id"
    current = _read_writer_id(path, place)
    if current is not None:
        return current
    candidate = secrets.token_hex(6)
    tmp = path.with_name(f".writer_id.{candidate}.tmp")
    with create_file(tmp) as fh:
        fh.write(f"{candidate} {place}\n".encode("ascii"))
    try:
        # link() fails if another process won the race; then its id is the one to use.
        os.link(tmp, path)
        return candidate
    except FileExistsError:
        current = _read_writer_id(path, place)
        if current is not None:
            return current
        os.replace(tmp, path)  # a stale or copied identity: replace it
        # Two processes of a copied clone may both replace it at once: the last replace
        # wins, and both must use what it wrote, or one id's segments would be stranded.
        return _read_writer_id(path, place) or candidate
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
        fields = read_bytes(path).decode("ascii").split()
    except (OSError, UnicodeDecodeError, UnsafePath):
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
