"""Durable local spool for batches the database could not take.

Layout: ``<spool_dir>/<destination>/<time_ns>-<pid>-<rand>.spool``, where ``destination`` is a hash
of the DSN's host, port, database and user (never the password), so exporters of different
databases never replay each other's data.

Each process appends only to segment files it created and holds an exclusive ``flock`` on its
active segment; any process may replay a segment whose lock it can take (a sealed segment, or one
left by a crashed process). Several processes can therefore share one spool directory. Replaying the
same segment twice is harmless: the writer's path is idempotent.

Set aside: ``<spool_dir>/<destination>/quarantine/`` holds, in the same format, batches the database
refused for a reason that will recur even after they were split down to one trace (see
``failures``): never replayed automatically, listed and replayed by ``otel-pg-spool``. Their records
carry the error (``"error"`` in the payload).

Permissions: the directories are ``0700`` and the files ``0600`` (they hold prompts and outputs); a
directory owned by another user, or writable by others, is refused (``UnsafeSpoolDirectory``), and so
is a segment file we do not own.

Records (``spool_codec``) are fsynced on every append; a torn or corrupted one is skipped by the
reader, so half a record is never replayed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..config.dsn import describe
from .spool_codec import (
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    MAX_RECORD_BYTES,
    READABLE_VERSIONS,
    Record,
    SpoolItem,
    decode_payload,
    decode_record,
    encode_batch,
    iter_records,
)

logger = logging.getLogger("otel_pg_exporter")

SUFFIX = ".spool"
#: The quarantine's folder under a destination's spool directory.
QUARANTINE = "quarantine"


class UnsafeSpoolDirectory(PermissionError):
    """A spool directory another user owns or may write to: its files could be planted or read."""


def private_directory(path: Path) -> Path:
    """Create ``path`` (``0700``) or check it: a directory (not a symlink) owned by us and writable
    by nobody else; one we own with wider read bits is narrowed to ``0700``. Raises
    ``UnsafeSpoolDirectory`` (an ``OSError``) otherwise."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeSpoolDirectory(f"{path} is not a directory (a symlink?)")
    if st.st_uid != os.geteuid():
        raise UnsafeSpoolDirectory(f"{path} is owned by another user (uid {st.st_uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeSpoolDirectory(f"{path} is writable by other users")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def default_spool_root() -> Path:
    """``$XDG_STATE_HOME/otel-pg-exporter/spool`` (``~/.local/state/...``), else a per-user temp dir
    (``otel-pg-exporter-<uid>``, checked like any spool directory: a planted one is refused)."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    candidate = base / "otel-pg-exporter" / "spool"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    # /tmp is shared: the per-user directory may have been made by someone else first
    return private_directory(Path(tempfile.gettempdir()) / f"otel-pg-exporter-{os.getuid()}") / "spool"


def spool_root(spool_dir: str | None) -> Path:
    """The spool root for a ``spool_dir`` setting (None: the default location)."""
    return Path(spool_dir) if spool_dir else default_spool_root()


def destination_key(dsn: str) -> str:
    """A short, password-free name for where a spool's data belongs."""
    return hashlib.sha256(describe(dsn).encode()).hexdigest()[:16]


def count_spans(path: Path) -> int:
    """Spans held by a segment's intact records (headers only; used to count drops exactly)."""
    try:
        with open(path, "rb") as f:
            return sum(r.span_count for r in iter_records(f, path.name))
    except FileNotFoundError:
        return 0


class Spool:
    """Append-only, fsynced, size-bounded segment files for one destination database.

    ``folder``: a subfolder of the destination's directory (``QUARANTINE`` for the batches set
    aside); the spool proper never reads it."""

    def __init__(
        self,
        root: Path,
        dsn: str,
        max_bytes: int,
        segment_bytes: int | None = None,
        folder: str | None = None,
    ) -> None:
        private_directory(Path(root))
        self.directory = private_directory(Path(root) / destination_key(dsn))
        if folder:
            self.directory = private_directory(self.directory / folder)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(64 * 1024, min(16 * 1024 * 1024, max_bytes // 8))
        self._lock = threading.Lock()
        self._active: BinaryIO | None = None
        self._active_path: Path | None = None
        self._active_size = 0
        self._orphan: BinaryIO | None = None

    # -- writing -----------------------------------------------------------------------------------

    def append(self, spans: Sequence[SpoolItem], error: str | None = None) -> int:
        """Write one batch durably; returns the number of items dropped to make room (oldest first,
        or this batch itself if nothing older can be dropped). Items: spans or log fragments;
        ``error``: why it is set aside (quarantine)."""
        record = encode_batch(spans, error)
        with self._lock:
            dropped = self._make_room(len(record))
            if dropped < 0:  # nothing could be dropped: this batch is the drop
                return len(spans)
            if self._active is None or self._active_size + len(record) > self.segment_bytes:
                self._rotate()
            assert self._active is not None
            self._active.write(record)
            self._active.flush()
            os.fsync(self._active.fileno())
            self._active_size += len(record)
            return dropped

    def _rotate(self) -> None:
        self._close_active()
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        f = os.fdopen(fd, "ab")  # kept open until sealed
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        _fsync_dir(self.directory)
        self._active, self._active_path, self._active_size = f, path, 0

    def _close_active(self) -> None:
        if self._active is not None:
            with contextlib.suppress(OSError):
                self._active.flush()
                os.fsync(self._active.fileno())
            self._active.close()  # releases the flock
            if self._active_size == 0 and self._active_path is not None:
                with contextlib.suppress(OSError):
                    self._active_path.unlink()
        self._active, self._active_path, self._active_size = None, None, 0

    def after_fork(self) -> None:
        """In a forked child: the active segment is the parent's (its lock too). Forget it without
        closing it for the parent, removing it or flushing it: the child starts its own."""
        self._lock = threading.Lock()
        # kept open, unused: every append was flushed, so closing it at exit writes nothing, and the
        # parent's descriptor keeps the segment's lock
        self._orphan = self._active
        self._active, self._active_path, self._active_size = None, None, 0

    def seal(self) -> None:
        """Close the active segment so it can be replayed; the next append starts a new one."""
        with self._lock:
            self._close_active()

    def _make_room(self, needed: int) -> int:
        """Drop oldest segments until ``needed`` bytes fit. Returns spans dropped, -1 if impossible."""
        if needed > self.max_bytes:
            return -1
        dropped = 0
        while self.size_bytes() + needed > self.max_bytes:
            count = self._drop_oldest()
            if count is None:
                return -1
            dropped += count
        return dropped

    def _drop_oldest(self) -> int | None:
        """Remove the oldest segment nobody holds (ours last); its span count, None if none."""
        for path in self.segments():
            with self.claim(path) as f:
                if f is None:
                    continue
                count = sum(r.span_count for r in iter_records(f, path.name))
                path.unlink(missing_ok=True)
            self._log_drop(count)
            return count
        if self._active_path is not None and self._active_size > 0:
            victim = self._active_path
            count = count_spans(victim)
            self._close_active()
            victim.unlink(missing_ok=True)
            self._log_drop(count)
            return count
        return None

    def _log_drop(self, count: int) -> None:
        logger.error(
            "otel-pg-exporter: spool full (%d bytes): dropped %d oldest spans", self.max_bytes, count
        )

    # -- reading -----------------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Segment files, oldest first."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except OSError:  # gone, or no longer a directory: nothing readable is held
            return []

    def size_bytes(self) -> int:
        total = 0
        for p in self.segments():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def has_data(self) -> bool:
        return any(True for _ in self.segments())

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[BinaryIO | None]:
        """Exclusive hold on a segment for replay (None if another process or our writer has it)."""
        if path == self._active_path:
            yield None
            return
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    yield None
                    return
                raise
            st = os.fstat(f.fileno())
            if st.st_nlink == 0:  # replayed and removed meanwhile
                yield None
                return
            if st.st_uid != os.geteuid():  # planted: never replayed as ours
                logger.error("otel-pg-exporter: spool %s is not ours (uid %d): not replayed", path, st.st_uid)
                yield None
                return
            yield f
        finally:
            f.close()

    def close(self) -> None:
        self.seal()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class SpoolSummary:
    """What a spool (or quarantine) directory holds: for ``stats()``, the doctor, ``otel-pg-spool``."""

    directory: Path
    segments: int = 0
    records: int = 0
    spans: int = 0
    bytes: int = 0
    #: the oldest segment's age in seconds (0 when empty)
    oldest_age_s: float = 0.0
    #: the errors records were set aside for, with their span counts (quarantine)
    errors: dict[str, int] = field(default_factory=dict)


#: Segment file name → (size, records, spans): what ``summarize`` read of a segment, reused while
#: the segment keeps its size (sealed segments never change).
SegmentCounts = dict[str, tuple[int, int, int]]


def summarize(
    directory: Path, *, read_errors: bool = False, counted: SegmentCounts | None = None
) -> SpoolSummary:
    """Count a directory's segments (headers only; with ``read_errors`` also each record's error).
    ``counted``: kept between calls, so a segment already counted at its size is not read again
    (``stats()`` asks often; a quarantine can be large)."""
    out = SpoolSummary(Path(directory))
    try:
        paths = sorted(p for p in Path(directory).iterdir() if p.name.endswith(SUFFIX))
    except OSError:
        return out
    now_ns = time.time_ns()
    seen: SegmentCounts = {}
    for path in paths:
        try:
            size = path.stat().st_size
            known = counted.get(path.name) if counted is not None and not read_errors else None
            if known is not None and known[0] == size:
                records, spans = known[1], known[2]
            else:
                records = spans = 0
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    for record in iter_records(f, path.name):
                        records += 1
                        spans += record.span_count
                        if read_errors:
                            try:
                                error = decode_record(record.payload)[1] or "(no error recorded)"
                            except (ValueError, KeyError, TypeError, zlib.error):
                                error = "(unreadable record)"
                            out.errors[error] = out.errors.get(error, 0) + record.span_count
        except OSError:
            continue
        seen[path.name] = (size, records, spans)
        out.bytes += size
        out.records += records
        out.spans += spans
        out.segments += 1
        with contextlib.suppress(ValueError):
            born_ns = int(path.name.split("-", 1)[0])
            out.oldest_age_s = max(out.oldest_age_s, (now_ns - born_ns) / 1e9)
    if counted is not None:  # segments gone (replayed, dropped) are forgotten
        counted.clear()
        counted.update(seen)
    return out


__all__ = [
    "FORMAT_VERSION",
    "HEADER",
    "MAGIC",
    "MAX_RECORD_BYTES",
    "READABLE_VERSIONS",
    "Record",
    "SpoolItem",
    "decode_payload",
    "decode_record",
    "encode_batch",
    "iter_records",
]
