"""The batch journal: what was sent, what came back, so a crashed batch resumes for free.

For every batch item the journal records, in this order, each step committed before the next
is taken:

1. ``sending``: the item's key (content hash + options) and the time, *before* the POST;
2. ``started``: the scan id, as soon as the server returns it;
3. ``done`` / ``failed``: the result (or the scan's failure).

A re-run with the same journal returns ``done`` items without a request, waits for
``started`` ones, and sends only what was never sent. An item left in ``sending`` is in
doubt (the POST may have reached the server, the answer never came back): ``_settlement``
is the rule that settles it from scan-overview, ``_recovery`` the code that applies it.
Times are the *service's* (see ``_servicetime``), never the host's. The ``meta`` table keeps
what a run learned for the next (scanDate's zone, recent request times, learned durations).

``SQLiteJournal`` is the default store (stdlib ``sqlite3`` in WAL mode, every call on one
worker thread, off the event loop). Another store implements the ``Journal`` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar, runtime_checkable

import attrs
import filelock

from ._convert import structure, unstructure
from ._errors import ImagetwinError
from ._models import ScanResult

__all__ = [
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalInFlight",
    "JournalLocked",
    "JournalScanIds",
    "SQLiteJournal",
    "open_journal",
]

T = TypeVar("T")
State = Literal["sending", "started", "done", "failed"]

_APPLICATION_ID: Final = 0x4954_4A31  # "ITJ1": marks the file as ours
# 1: items; 2: + meta (key/value: the service clock's calibration, the learned durations).
_SCHEMA_VERSION: Final = 2
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS items (
    key        TEXT PRIMARY KEY,
    label      TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('sending', 'started', 'done', 'failed')),
    sent_at    REAL NOT NULL,
    until      REAL,
    answered_at REAL,
    scan_id    TEXT,
    result     TEXT,
    error      TEXT,
    note       TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_scan_id ON items (scan_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
# Set while a process has the journal open, cleared by ``close``: found set with no -wal file
# beside the journal, it means the file was copied without its log.
_OPEN_KEY: Final = "journal.open"
_MARK_OPEN: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES ('journal.open', '1');"
_MIGRATIONS: Final = {
    # to 2: items are dated in the service's time, and a meta store (see _SCHEMA_VERSION).
    2: "ALTER TABLE items ADD COLUMN until REAL; ALTER TABLE items ADD COLUMN answered_at REAL; "
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);",
}


class JournalError(ImagetwinError):
    """The journal cannot be used: not a journal, damaged, or from a newer version."""


class JournalLocked(JournalError):
    """Another process is running a batch on this journal right now."""


@attrs.frozen
class JournalEntry:
    """One item's record, dated in the *service's* time (seconds since the epoch by the API's
    clock, learned from its answers; see ``_servicetime``), never the host's.

    ``sent_at``: no later than the POST went out; ``until``: no earlier than the last moment
    the POST could still reach the service (``None``: not known, e.g. recorded by version 1);
    ``answered_at``: no earlier than the answer came back. ``live`` (``in_flight`` only): whether
    the run that sent it still runs, so its answer may yet be recorded (``None``: not known).
    """

    key: str
    label: str
    state: State
    sent_at: float
    scan_id: str | None = None
    result: ScanResult | None = None
    error: str | None = None
    note: str | None = None
    until: float | None = None
    answered_at: float | None = None
    live: bool | None = None


@runtime_checkable
class Journal(Protocol):
    """What ``submit_and_wait(journal=...)`` needs from a store.

    Every method must be durable when it returns: the batch takes the next step (sending a
    POST, say) only after the write that precedes it has returned.

    A store that other processes write while a run uses it (several pods on one journal)
    should also have the optional ``scan_ids`` and ``in_flight`` methods (see
    ``JournalScanIds`` and ``JournalInFlight``): without them, settling knows only the scan ids
    ``entries()`` returned when the run began, and nothing of the other processes' POSTs.
    """

    async def entries(self) -> dict[str, JournalEntry]: ...

    async def sending(
        self, key: str, label: str, sent_at: float, until: float | None = None
    ) -> None: ...

    async def started(
        self, key: str, scan_id: str, note: str | None = None, answered_at: float | None = None
    ) -> None: ...

    async def finished(self, key: str, result: ScanResult) -> None: ...

    async def failed(self, key: str, error: str) -> None: ...

    async def forget(self, key: str) -> None: ...

    async def load_meta(self, key: str) -> str | None:
        """The value last stored under ``key`` (``None`` if none): state a run learned and the
        next one starts from (the service clock's calibration, the learned scan durations)."""
        ...

    async def store_meta(self, key: str, value: str) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class JournalScanIds(Protocol):
    """The optional part of a ``Journal``: every scan id it holds, read now.

    Settling an in-doubt item adopts a scan of scan-overview only if no journal entry claims
    it. It may wait a while between reads, and in a journal several processes share (pods on
    one ``PostgresJournal``) another process can record new scans meanwhile: one dated inside
    the item's window would look unclaimed, and be adopted as that item's result. Settling
    therefore calls ``scan_ids`` before each decision when the journal has it.

    ``scan_ids`` must have no side effect (unlike ``PostgresJournal.entries``, which takes
    over dead runs' items) and must return the ids of *every* entry, whoever wrote it, in any
    state. A journal only one process writes at a time may leave it out.

        >>> class SharedJournal:  # every Journal method, and:
        ...     async def scan_ids(self) -> set[str]:
        ...         rows = await self.db.fetch("SELECT scan_id FROM items")
        ...         return {row[0] for row in rows if row[0] is not None}
    """

    async def scan_ids(self) -> set[str]: ...


@runtime_checkable
class JournalInFlight(Protocol):
    """The other optional part of a ``Journal``: every entry left "sending", read now.

    A POST can register its scan (and scan-overview list it) while its answer is still on its
    way: until the answer is journaled, no entry claims that scan, and ``scan_ids`` cannot say
    whose it is. In a journal several processes share, settling therefore reads the "sending"
    entries too, before each decision (after scan-overview, before ``scan_ids``), and never
    adopts a scan dated inside the window (``sent_at`` to ``until``) of one that is not among
    the items it settles: the items it may belong to wait for that answer for a while, and are
    reported if it does not come.

    ``in_flight`` must have no side effect (unlike ``PostgresJournal.entries``) and must
    return *every* entry in state "sending", whoever wrote it, alive or dead, keyed like
    ``entries``; an entry's ``live`` set to False marks a dead run's, whose answer settling
    does not wait for (its window still counts). A journal only one process writes at a time
    may leave it out.

        >>> class SharedJournal:  # every Journal method, scan_ids, and:
        ...     async def in_flight(self) -> dict[str, JournalEntry]:
        ...         rows = await self.db.fetch(
        ...             "SELECT key, label, sent_at, until FROM items WHERE state = 'sending'"
        ...         )
        ...         return {
        ...             r[0]: JournalEntry(r[0], r[1], "sending", r[2], until=r[3]) for r in rows
        ...         }
    """

    async def in_flight(self) -> dict[str, JournalEntry]: ...


class SQLiteJournal:
    """The default journal: one SQLite file, locked to one process at a time.

    It has no ``in_flight`` (``JournalInFlight``): the process that holds the file wrote every
    "sending" entry in it, and settles them all with none of its own POSTs on its way.

        >>> journal = await SQLiteJournal.open("sweep.journal")
        >>> outcomes = await client.submit_and_wait(paths, journal=journal)
        >>> await journal.close()

    (``submit_and_wait(paths, journal="sweep.journal")`` opens and closes it for you.)
    A lock file beside it (``<path>.lock``, an OS lock released when the process dies, even
    by SIGKILL) keeps two processes from running one journal at once.
    """

    def __init__(
        self, path: Path, connection: sqlite3.Connection, lock: filelock.BaseFileLock
    ) -> None:
        self.path = path
        self._db = connection
        self._lock = lock
        # sqlite3 connections belong to one thread: every call goes through this one.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagetwin-journal")

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SQLiteJournal:
        """Open (or create) the journal at ``path``; ``JournalLocked`` if another process has
        it, ``JournalError`` if the file is not a journal or is damaged."""
        target = Path(path)
        try:
            lock = await asyncio.to_thread(_take_lock, target)
        except OSError as exc:  # a read-only or missing directory: ours to report, typed
            raise JournalError(f"cannot open the journal {target}: {exc.strerror or exc}") from exc
        try:
            db = await asyncio.to_thread(_connect, target)
        except BaseException:
            lock.release()
            raise
        # From here on the connection lives on the journal's own thread.
        return cls(target, db, lock)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        # Shielded: a cancelled batch must not leave a write half-done or a lock held by a
        # thread nobody waits for; the write finishes, the caller still sees the cancel.
        try:
            return await asyncio.shield(loop.run_in_executor(self._thread, fn, self._db))
        except sqlite3.Error as exc:  # a full disk, a file removed under us, ...
            raise JournalError(f"the journal {self.path} could not be written: {exc}") from exc

    async def entries(self) -> dict[str, JournalEntry]:
        rows = await self._call(
            lambda db: db.execute(
                "SELECT key, label, state, sent_at, scan_id, result, error, note, until, "
                "answered_at FROM items"
            ).fetchall()
        )
        return {row[0]: _entry(row, self.path) for row in rows}

    async def scan_ids(self) -> set[str]:
        """Every scan id the journal holds (``JournalScanIds``). One process has the file, so
        this only repeats what ``entries`` said; kept for the same contract everywhere."""
        rows = await self._call(
            lambda db: db.execute("SELECT scan_id FROM items WHERE scan_id IS NOT NULL").fetchall()
        )
        return {str(row[0]) for row in rows}

    async def sending(
        self, key: str, label: str, sent_at: float, until: float | None = None
    ) -> None:
        await self._write(
            "INSERT INTO items (key, label, state, sent_at, until, updated_at) "
            "VALUES (?, ?, 'sending', ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET state = 'sending', sent_at = excluded.sent_at, "
            "until = excluded.until, answered_at = NULL, "
            "scan_id = NULL, result = NULL, error = NULL, note = NULL, "
            "updated_at = excluded.updated_at",
            (key, label, sent_at, until, time.time()),
        )

    async def started(
        self, key: str, scan_id: str, note: str | None = None, answered_at: float | None = None
    ) -> None:
        await self._write(
            "UPDATE items SET state = 'started', scan_id = ?, note = COALESCE(?, note), "
            "answered_at = COALESCE(?, answered_at), updated_at = ? WHERE key = ?",
            (scan_id, note, answered_at, time.time(), key),
        )

    async def finished(self, key: str, result: ScanResult) -> None:
        await self._write(
            # The scan id again: the "started" write may have failed (the batch goes on).
            "UPDATE items SET state = 'done', scan_id = ?, result = ?, updated_at = ? "
            "WHERE key = ?",
            (result.scan_id, json.dumps(unstructure(result)), time.time(), key),
        )

    async def failed(self, key: str, error: str) -> None:
        await self._write(
            "UPDATE items SET state = 'failed', error = ?, updated_at = ? WHERE key = ?",
            (error, time.time(), key),
        )

    async def forget(self, key: str) -> None:
        await self._write("DELETE FROM items WHERE key = ?", (key,))

    async def load_meta(self, key: str) -> str | None:
        row = await self._call(
            lambda db: db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])

    async def store_meta(self, key: str, value: str) -> None:
        await self._write(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:  # one transaction, committed (and synced: synchronous=FULL) on exit
                db.execute(sql, params)

        await self._call(write)

    async def close(self) -> None:
        """Close the database and release the lock. Idempotent."""
        if not self._lock.is_locked:
            return

        def close(db: sqlite3.Connection) -> None:
            with db:
                db.execute("UPDATE meta SET value = '0' WHERE key = ?", (_OPEN_KEY,))
            db.close()  # the last connection: checkpoints the log into the file, removes it

        with contextlib.suppress(JournalError):
            await self._call(close)
        self._thread.shutdown(wait=True)
        self._lock.release()

    async def __aenter__(self) -> SQLiteJournal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def open_journal(journal: str | os.PathLike[str] | Journal) -> tuple[Journal, bool]:
    """The store for ``journal`` and whether we opened it (and so must close it)."""
    if isinstance(journal, str | os.PathLike):
        return await SQLiteJournal.open(journal), True
    if isinstance(journal, Journal):
        return journal, False
    raise TypeError(f"journal must be a path or a Journal, not {type(journal).__name__}")


def _take_lock(path: Path) -> filelock.BaseFileLock:
    # An OS lock (flock / LockFileEx), released by the OS when the process dies, even by
    # SIGKILL. Never a "soft" lock file, which a killed process would leave behind for ever;
    # the file itself stays (unlinking a locked file lets a third process lock another inode).
    if not path.parent.is_dir():  # never created silently: a typo must not make a tree
        raise JournalError(
            f"cannot open the journal {path}: the directory {path.parent} does not exist"
        )
    lock = filelock.FileLock(
        path.parent / f"{path.name}.lock",
        timeout=0,
        thread_local=False,  # taken on one worker thread, released on another
        preserve_lock_file=True,
    )
    try:
        lock.acquire()
    except filelock.Timeout:
        raise JournalLocked(
            f"{path} is in use by another process: two runs of one journal could pay for a "
            "scan twice. Wait for it to finish, or use another journal."
        ) from None
    except OSError as exc:
        raise _directory_error(path, exc) from exc
    return lock


def _directory_error(path: Path, exc: OSError) -> JournalError:
    folder = path.parent
    if not folder.is_dir():
        return JournalError(
            f"cannot open the journal {path}: the directory {folder} does not exist"
        )
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return JournalError(
            f"cannot open the journal {path}: the directory {folder} is read-only (the journal "
            "writes its lock and log files beside it)"
        )
    return JournalError(f"cannot open the journal {path}: {exc.strerror or exc}")


def _connect(path: Path) -> sqlite3.Connection:
    wal = path.with_name(f"{path.name}-wal")
    had_wal = wal.exists()
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc
    try:
        version = _check(db, path)
        if version and not had_wal:
            _check_log(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")  # a committed step survives a power cut
        # One transaction: marked as ours, schema and version all land, or none does (a
        # creation cut short by a full disk leaves an empty database, which the next open
        # takes as new rather than as "not a journal").
        steps = [f"PRAGMA application_id = {_APPLICATION_ID};", _SCHEMA] if not version else []
        steps += [_MIGRATIONS[v] for v in range(version + 1, _SCHEMA_VERSION + 1) if version]
        db.executescript(
            f"BEGIN; {' '.join(steps)} PRAGMA user_version = {_SCHEMA_VERSION}; "
            f"{_MARK_OPEN} COMMIT;"
        )
        # The "left open" mark must reach the main file, not only the log: a copy made
        # without the log then still says that the log mattered.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.DatabaseError as exc:
        db.close()
        if "readonly" in str(exc) or "read-only" in str(exc):
            raise JournalError(
                f"the journal {path} is read-only: a journal must record each step before the "
                "next is taken"
            ) from exc
        if isinstance(exc, sqlite3.OperationalError) and "disk" in str(exc):
            raise JournalError(f"cannot write the journal {path}: {exc}") from exc
        raise JournalError(
            f"{path} is not a readable imagetwin journal ({exc}); nothing was changed. "
            "Move it aside to start afresh (scans it recorded would then be paid again)."
        ) from exc
    except BaseException:
        db.close()
        raise
    return db


def _check_log(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a journal left open by a run (so its log mattered) whose log is not beside it."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
        return  # schema 1: no mark kept
    row = db.execute("SELECT value FROM meta WHERE key = ?", (_OPEN_KEY,)).fetchone()
    if row is not None and row[0] == "1":
        wal = f"{path.name}-wal"
        raise JournalError(
            f"{path} was last used by a run that did not close it, and its write-ahead log "
            f"{wal} is not beside it: the journal was copied or moved without its -wal file, "
            f"so its latest steps are missing. Copy {wal} along with it (and stop any run "
            "still using the original); nothing was changed."
        )


def _check(db: sqlite3.Connection, path: Path) -> int:
    """The journal's schema version; 0 for an empty database (new, or whose creation was cut
    short), which is safe to make into a journal."""
    (tables,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    if tables == 0 and app_id in (0, _APPLICATION_ID):
        return 0
    if app_id != _APPLICATION_ID:
        raise JournalError(
            f"{path} is an SQLite file but not an imagetwin journal; refusing to touch it"
        )
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > _SCHEMA_VERSION:
        raise JournalError(f"{path} was written by a newer imagetwin_async (schema {version})")
    (verdict,) = db.execute("PRAGMA quick_check").fetchone()
    if verdict != "ok":
        raise JournalError(f"{path} is damaged ({verdict}); nothing was changed")
    return max(version, 1)


def _entry(row: tuple[Any, ...], path: Path) -> JournalEntry:
    key, label, state, sent_at, scan_id, result, error, note, until, answered_at = row
    parsed: ScanResult | None = None
    if result is not None:
        try:
            parsed = structure(json.loads(result), ScanResult)
        except (ValueError, ImagetwinError) as exc:
            raise JournalError(f"{path}: the result stored for {label} is damaged") from exc
    return JournalEntry(
        key, label, state, sent_at, scan_id, parsed, error, note, until, answered_at
    )


def utc_now() -> float:
    """Wall-clock UTC seconds: comparable with scan-overview's dates, unlike loop time."""
    return dt.datetime.now(dt.UTC).timestamp()
