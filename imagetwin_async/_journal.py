"""The batch journal: what was sent, what came back, so a crashed batch resumes for free.

For every batch item the journal records, in this order, each step committed before the next
is taken:

1. ``sending``: the item's key (content hash + options) and the time, *before* the POST;
2. ``started``: the scan id, as soon as the server returns it;
3. ``done`` / ``failed``: the result (or the scan's failure).

A re-run with the same journal returns ``done`` items without a request, waits for
``started`` ones, and sends only what was never sent. An item left in ``sending`` is the
ambiguous case (the POST may have reached the server, the answer never came back): see
``BatchRunner._settle`` in ``_batch`` for how scan-overview can settle it.

``SQLiteJournal`` is the default store (stdlib ``sqlite3`` in WAL mode, every call on one
worker thread, off the event loop). Another store implements the ``Journal`` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol, TypeVar, runtime_checkable

import attrs

from ._convert import structure, unstructure
from ._errors import ImagetwinError
from ._models import ScanResult

__all__ = [
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalLocked",
    "SQLiteJournal",
    "open_journal",
]

T = TypeVar("T")
State = Literal["sending", "started", "done", "failed"]

_APPLICATION_ID: Final = 0x4954_4A31  # "ITJ1": marks the file as ours
_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS items (
    key        TEXT PRIMARY KEY,
    label      TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('sending', 'started', 'done', 'failed')),
    sent_at    REAL NOT NULL,
    scan_id    TEXT,
    result     TEXT,
    error      TEXT,
    note       TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS items_scan_id ON items (scan_id);
"""


class JournalError(ImagetwinError):
    """The journal cannot be used: not a journal, damaged, or from a newer version."""


class JournalLocked(JournalError):
    """Another process is running a batch on this journal right now."""


@attrs.frozen
class JournalEntry:
    """One item's record. ``sent_at`` is UTC seconds since the epoch, taken before the POST."""

    key: str
    label: str
    state: State
    sent_at: float
    scan_id: str | None = None
    result: ScanResult | None = None
    error: str | None = None
    note: str | None = None


@runtime_checkable
class Journal(Protocol):
    """What ``submit_and_wait(journal=...)`` needs from a store.

    Every method must be durable when it returns: the batch takes the next step (sending a
    POST, say) only after the write that precedes it has returned.
    """

    async def entries(self) -> dict[str, JournalEntry]: ...

    async def sending(self, key: str, label: str, sent_at: float) -> None: ...

    async def started(self, key: str, scan_id: str, note: str | None = None) -> None: ...

    async def finished(self, key: str, result: ScanResult) -> None: ...

    async def failed(self, key: str, error: str) -> None: ...

    async def forget(self, key: str) -> None: ...

    async def close(self) -> None: ...


class SQLiteJournal:
    """The default journal: one SQLite file, locked to one process at a time.

        >>> journal = await SQLiteJournal.open("sweep.journal")
        >>> outcomes = await client.submit_and_wait(paths, journal=journal)
        >>> await journal.close()

    (``submit_and_wait(paths, journal="sweep.journal")`` opens and closes it for you.)
    A lock file beside it (``<path>.lock``, an OS lock released when the process dies, even
    by SIGKILL) keeps two processes from running one journal at once.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, lock: IO[bytes]) -> None:
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
            lock.close()
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
                "SELECT key, label, state, sent_at, scan_id, result, error, note FROM items"
            ).fetchall()
        )
        return {row[0]: _entry(row, self.path) for row in rows}

    async def sending(self, key: str, label: str, sent_at: float) -> None:
        await self._write(
            "INSERT INTO items (key, label, state, sent_at, updated_at) "
            "VALUES (?, ?, 'sending', ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET state = 'sending', sent_at = excluded.sent_at, "
            "scan_id = NULL, result = NULL, error = NULL, note = NULL, "
            "updated_at = excluded.updated_at",
            (key, label, sent_at, time.time()),
        )

    async def started(self, key: str, scan_id: str, note: str | None = None) -> None:
        await self._write(
            "UPDATE items SET state = 'started', scan_id = ?, note = COALESCE(?, note), "
            "updated_at = ? WHERE key = ?",
            (scan_id, note, time.time(), key),
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

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with db:  # one transaction, committed (and synced: synchronous=FULL) on exit
                db.execute(sql, params)

        await self._call(write)

    async def close(self) -> None:
        """Close the database and release the lock. Idempotent."""
        if self._lock.closed:
            return
        with contextlib.suppress(JournalError):
            await self._call(lambda db: db.close())
        self._thread.shutdown(wait=True)
        self._lock.close()

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


def _take_lock(path: Path) -> IO[bytes]:
    import fcntl  # noqa: PLC0415 - POSIX only: imported here so the SDK still loads elsewhere

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = (path.parent / f"{path.name}.lock").open("ab")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise JournalLocked(
            f"{path} is in use by another process: two runs of one journal could pay for a "
            "scan twice. Wait for it to finish, or use another journal."
        ) from None
    return lock


def _connect(path: Path) -> sqlite3.Connection:
    existed = path.exists() and path.stat().st_size > 0
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {path}: {exc}") from exc
    try:
        if existed:
            _check(db, path)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")  # a committed step survives a power cut
        if not existed:
            db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise JournalError(
            f"{path} is not a readable imagetwin journal ({exc}); nothing was changed. "
            "Move it aside to start afresh (scans it recorded would then be paid again)."
        ) from exc
    except BaseException:
        db.close()
        raise
    return db


def _check(db: sqlite3.Connection, path: Path) -> None:
    app_id = db.execute("PRAGMA application_id").fetchone()[0]
    if app_id != _APPLICATION_ID:
        raise JournalError(
            f"{path} is an SQLite file but not an imagetwin journal; refusing to touch it"
        )
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > _SCHEMA_VERSION:
        raise JournalError(f"{path} was written by a newer imagetwin_async (schema {version})")
    (verdict,) = db.execute("PRAGMA quick_check").fetchone()
    if verdict != "ok":
        raise JournalError(f"{path} is damaged ({verdict}); nothing was changed")


def _entry(row: tuple[Any, ...], path: Path) -> JournalEntry:
    key, label, state, sent_at, scan_id, result, error, note = row
    parsed: ScanResult | None = None
    if result is not None:
        try:
            parsed = structure(json.loads(result), ScanResult)
        except (ValueError, ImagetwinError) as exc:
            raise JournalError(f"{path}: the result stored for {label} is damaged") from exc
    return JournalEntry(key, label, state, sent_at, scan_id, parsed, error, note)


def utc_now() -> float:
    """Wall-clock UTC seconds: comparable with scan-overview's dates, unlike loop time."""
    return dt.datetime.now(dt.UTC).timestamp()
