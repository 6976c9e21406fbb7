"""The write side of hot segments: one appender per session, shared by threads and processes.

Every append happens under the session lock (``locks.py``), so the bytes of one append call are
written contiguously and never interleave with another writer's, in this process or another.
Processes of one clone share one writer id and therefore one current segment file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from pathlib import Path

from . import frames
from .errors import ConvstoreError, StoreError, UnsafePath
from .layout import HOT_RE, fsync_dir, hot_name, list_names, open_fd, open_read, private_dir

log = logging.getLogger("convstore.segments")

END_MARKER = frames.END_MARKER
DEFAULT_ROLL_BYTES = 8 * 1024 * 1024


class Appender:
    """Appends frames to the current hot segment of one session for this writer.

    Not thread-safe by itself: every call is made holding the session's lock. The store may
    close the descriptor of an idle appender (``release_fd``) to bound open files; the object
    remembers where the segment ended, so reopening validates only bytes appended since.
    """

    def __init__(self, folder: Path, writer: str, roll_bytes: int = DEFAULT_ROLL_BYTES) -> None:
        self.folder = folder
        self.writer = writer
        self.roll_bytes = roll_bytes
        self.path: Path | None = None
        self.seq = 0
        # Segments this appender closed because they passed roll_bytes. Moving on from a
        # segment that another process closed (a compaction, or another appender's roll) is
        # not counted: that process has sealing in hand.
        self.rolls = 0
        self.fd: int | None = None
        self.inode = -1
        self.end = 0  # size of the file as of our last write or check, excluding torn bytes
        self.dirty = False
        self.unsynced: set[Path] = set()  # released with appends not yet fsynced
        self.guard = threading.Lock()  # serialises fd use against the store's fd eviction

    # -- locating the current segment -------------------------------------------------------

    def _current_seq(self) -> int:
        best = 0
        try:
            names = list_names(self.folder)
        except FileNotFoundError:
            return 0
        for name in names:
            m = HOT_RE.fullmatch(name)
            if m and m.group(1) == self.writer:
                best = max(best, int(m.group(2)))
        return best

    def _open(self, seq: int | None = None) -> None:
        """Open the newest segment of this writer (or ``seq``), creating it if needed."""
        if seq is None and self.path is not None and self._reopen():
            return
        try:
            # Refuses a linked session folder; tightens one that a git checkout left 0755.
            # Only the session folder is made: a store folder moved away must not be recreated
            # here, as an empty ghost that would take this append.
            created = private_dir(self.folder, below=self.folder.parent)
        except FileNotFoundError:
            raise StoreError(
                f"the store folder holding {self.folder} is gone (moved or deleted); "
                "nothing was written. Reopen the store at its new path"
            ) from None
        if created:
            fsync_dir(self.folder.parent)
        if seq is None:
            seq = max(1, self._current_seq())
        while True:
            path = self.folder / hot_name(self.writer, seq)
            try:
                fd = open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                break
            except UnsafePath:
                # A link under this writer's next segment name (committed by another clone,
                # or planted) would make the append write wherever it points. It is not
                # ours and holds nothing of ours: leave it for check() to report and take
                # the next number, rather than fail every append from now on.
                log.warning("%s is a symbolic link: skipped; `convstore check` reports it", path)
                seq += 1
        st = os.fstat(fd)
        if path != self.path or st.st_ino != self.inode or st.st_size < self.end:
            self.end = 0  # not the file we knew: validate it from the start
        self.fd, self.path, self.seq, self.inode = fd, path, seq, st.st_ino
        if st.st_size == 0:
            # The new directory entry must survive a crash as well as the data written to it.
            fsync_dir(self.folder)
        self._catch_up()

    def _reopen(self) -> bool:
        """Reopen the segment this appender last wrote, if it is still there and the same file.

        The store closes idle descriptors to bound open files; reopening the known file skips
        the folder listing, and catching up from the remembered end skips re-reading it. A
        segment closed or replaced meanwhile is noticed by _catch_up and the inode check.
        """
        assert self.path is not None
        try:
            fd = open_fd(self.path, os.O_WRONLY | os.O_APPEND)
        except (FileNotFoundError, UnsafePath):
            return False
        st = os.fstat(fd)
        if st.st_ino != self.inode or st.st_nlink == 0 or st.st_size < self.end:
            os.close(fd)
            self.end = 0
            return False
        self.fd = fd
        self._catch_up()
        return True

    def _catch_up(self) -> None:
        """Validate bytes appended since ``self.end`` by other processes (or a crash)."""
        assert self.fd is not None and self.path is not None
        size = os.fstat(self.fd).st_size
        if size == self.end:
            return
        with open_read(self.path) as fh:
            fh.seek(self.end)
            data = fh.read(size - self.end)
        result = frames.scan(data, self.end, decompress=False)
        if result.closed:
            self._close_fd()
            self._open(max(self.seq + 1, self._current_seq()))
            return
        torn = result.torn
        if torn is not None:
            # Bytes of an append that never returned (its writer died mid-write): no one was
            # told they were stored, and we hold the lock, so no live writer is producing them.
            os.ftruncate(self.fd, torn.offset)
            os.fsync(self.fd)
            size = torn.offset
        self.end = size

    def _close_fd(self) -> None:
        if self.fd is not None:
            if self.dirty:
                os.fdatasync(self.fd)
                self.dirty = False
            os.close(self.fd)
            self.fd = None

    # -- writing -----------------------------------------------------------------------------

    def append(self, frame: bytes, *, sync: bool) -> tuple[str, int, int]:
        """Write one encoded frame; return (segment file name, start offset, end offset)."""
        with self.guard:
            if self.fd is None:
                self._open()
            else:
                st = os.fstat(self.fd)
                if st.st_nlink == 0:  # sealed and removed by compaction: move on
                    self._close_fd()
                    self._open()
                elif st.st_size != self.end:
                    self._catch_up()
            assert self.fd is not None and self.path is not None
            start = self.end
            try:
                _write_all(self.fd, frame)
                if sync:
                    os.fdatasync(self.fd)
                else:
                    self.dirty = True
            except OSError as e:
                # Take back a partial write so the segment ends on a frame boundary. We hold
                # the lock, so these bytes are ours alone.
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, start)
                what = "the disk is full" if e.errno == errno.ENOSPC else e.strerror
                raise ConvstoreError(
                    f"could not append to {self.path}: {what}; nothing was stored"
                ) from None
            self.end = start + len(frame)
            name = self.path.name
            if self.end >= self.roll_bytes:
                # The frame is stored and acknowledged from here on: a roll that fails (disk
                # full for the end marker, no descriptor for the next file) must not turn it
                # into a reported failure. The next append retries; a half-written end marker
                # is a torn tail that it truncates.
                with contextlib.suppress(OSError):
                    self._roll()
                    self.rolls += 1
            return name, start, start + len(frame)

    def close_segment(self) -> Path | None:
        """Close the current segment so that the next append starts a new one (for sealing)."""
        with self.guard:
            if self.fd is not None and os.fstat(self.fd).st_nlink == 0:
                self._close_fd()  # sealed and removed by an earlier compaction
            if self.fd is None:
                self._open()
            else:
                self._catch_up()
            assert self.path is not None
            if self.end == 0:
                return None
            path = self.path
            self._roll()
            return path

    def _roll(self) -> None:
        assert self.fd is not None
        _write_all(self.fd, END_MARKER)
        os.fdatasync(self.fd)
        self.dirty = False
        self._close_fd()
        self.end = 0
        # Create the next segment at once, so that the newest sequence number of a writer
        # always exists and is never reused after compaction removes the closed ones.
        self._open(self.seq + 1)

    def sync(self) -> None:
        with self.guard:
            if self.fd is not None and self.dirty:
                os.fdatasync(self.fd)
                self.dirty = False
            self._sync_released()

    def _sync_released(self) -> None:
        # Segments whose descriptor was released with unsynced appends (relaxed modes).
        for path in list(self.unsynced):
            try:
                fd = open_fd(path, os.O_RDONLY)
            except (FileNotFoundError, UnsafePath):
                pass  # sealed and removed by compaction, which fsynced the sealed copy
            else:
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            self.unsynced.discard(path)

    def release_fd(self) -> bool:
        """Close the descriptor if no thread is using it; False if busy."""
        if not self.guard.acquire(blocking=False):
            return False
        try:
            if self.fd is not None:
                # In the relaxed modes the fsync is owed at the next flush(), not now: an
                # fsync per eviction would make round-robin appends over many sessions as
                # slow as the durable mode.
                if self.dirty and self.path is not None:
                    self.unsynced.add(self.path)
                    self.dirty = False
                os.close(self.fd)
                self.fd = None
            return True
        finally:
            self.guard.release()

    def close(self) -> None:
        with self.guard:
            self._close_fd()
            self._sync_released()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's descriptor (its bytes are the parent's)."""
        self.guard = threading.Lock()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.dirty = False
        self.unsynced.clear()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
