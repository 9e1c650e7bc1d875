"""A batch journal on PostgreSQL, for batch jobs whose disk does not outlive them.

Same contract as ``SQLiteJournal`` (every step committed before the next is taken: the intent
before the POST, then the scan id, then the result or the failure), kept in a server that
survives the pod, the CI runner or the spot instance the batch ran on. Several processes may
sweep shards of one batch against one journal at once; what keeps two of them from running one
item is a *claim*:

- each open journal holds a PostgreSQL session-level advisory lock on a random owner number
  for as long as its connection lives; a process that dies (SIGKILL, a lost node) loses its
  connection, the server drops the lock, and its claims are void at once, with no lease to
  time out (server-side TCP keepalives bound how long a vanished host takes to be noticed);
- an item is claimed by writing its "sending" row with our owner number; a row someone else
  owns (alive, or the row a dead run left behind that we did not take over at start) is never
  overwritten: ``sending`` raises ``JournalLocked`` for that item and nothing is sent;
- ``entries()`` takes over the "sending" rows of dead runs (they are settled or reported by the
  batch, see ``_batch.settle``) only when no other run is sending on this journal right now:
  settling through scan-overview assumes no unrecorded POST of someone else is in the window.

    >>> journal = await PostgresJournal.open("postgresql://db.internal/batches#sweep-2026-12")
    >>> outcomes = await client.submit_and_wait(paths, journal=journal)
    >>> await journal.close()

(``submit_and_wait(paths, journal="postgresql://...#name")`` opens and closes it for you.) The
URL is libpq's (``sslmode``, ``options=-csearch_path%3Dmyschema``, ...); its fragment names the
journal inside the database (default ``default``), so one database holds many journals. Needs
the ``postgres`` extra (``pip install imagetwin-async[postgres]``: psycopg 3) and a direct or
session-pooled connection: a transaction-mode pooler would drop the session's lock.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import attrs
import psycopg
import psycopg.conninfo

from ._convert import structure, unstructure
from ._errors import ImagetwinError
from ._journal import JournalEntry, JournalError, JournalLocked
from ._models import ScanResult

__all__ = ["PostgresJournal"]

T = TypeVar("T")

# The advisory-lock namespace of journal owners ("ITJ1"); the second key is the owner number.
_LOCK_SPACE: Final = 0x4954_4A31
# The namespace of the per-journal lock under which a run decides to take over dead runs'
# items ("ITJ2"; the second key is hashtext(journal)): one run at a time, so the items of the
# dead go whole to one run, which settles them alone.
_TAKEOVER_SPACE: Final = 0x4954_4A32
_SCHEMA_VERSION: Final = 1
# libpq's client-side keepalives: a server that vanishes fails a call in about 25 s, not never.
_CLIENT_KEEPALIVES: Final = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}
_DEFAULT_CONNECT_TIMEOUT: Final = 10
_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS imagetwin_journal_items (
        journal    TEXT NOT NULL,
        key        TEXT NOT NULL,
        label      TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('sending', 'started', 'done', 'failed')),
        sent_at    DOUBLE PRECISION NOT NULL,
        scan_id    TEXT,
        result     TEXT,
        error      TEXT,
        note       TEXT,
        owner      INTEGER,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (journal, key)
    )
    """,
    # Service-time bounds of the POST's window and of its answer (see ``JournalEntry``).
    "ALTER TABLE imagetwin_journal_items ADD COLUMN IF NOT EXISTS until DOUBLE PRECISION",
    "ALTER TABLE imagetwin_journal_items ADD COLUMN IF NOT EXISTS answered_at DOUBLE PRECISION",
    """
    CREATE TABLE IF NOT EXISTS imagetwin_journal_meta (
        journal TEXT NOT NULL,
        key     TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (journal, key)
    )
    """,
)
# Whether the owner number in a row belongs to a live session: its advisory lock is held.
# pg_locks is readable by every role (pg_stat_activity hides other roles' sessions).
_ALIVE: Final = f"""EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = {_LOCK_SPACE}::oid AND l.objid = i.owner::oid
)"""
_COLUMNS: Final = "key, label, state, sent_at, scan_id, result, error, note, until, answered_at"


class PostgresJournal:
    """A journal kept in PostgreSQL; several processes may run shards of one batch on it.

        >>> async with await PostgresJournal.open(os.environ["JOURNAL_URL"]) as journal:
        ...     outcomes = await client.submit_and_wait(paths, journal=journal)

    ``JournalLocked`` for an item another live run holds; ``JournalError`` when the server
    cannot be reached or written (the batch then sends nothing more for that item). The URL's
    password never appears in a message or a ``repr``.
    """

    def __init__(self, connection: psycopg.AsyncConnection[Any], name: str, where: str) -> None:
        self._db = connection
        self.name = name
        self._where = where  # host/database, without credentials: for messages
        self._owner = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresJournal {self._where}#{self.name}>"

    @classmethod
    async def open(
        cls, url: str, *, name: str | None = None, connect_timeout: float = 10.0
    ) -> PostgresJournal:
        """Connect, create the tables if missing, and take an owner number.

        ``name`` overrides the URL's fragment (the journal's name in the database).
        """
        conninfo, fragment, where = _split(url)
        journal_name = name if name is not None else (fragment or "default")
        params = {**_CLIENT_KEEPALIVES, "connect_timeout": str(max(1, round(connect_timeout)))}
        try:
            db = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(
                    psycopg.conninfo.make_conninfo(conninfo, **params), autocommit=True
                ),
                connect_timeout + 1.0,
            )
        except (psycopg.Error, TimeoutError, OSError) as exc:
            # The message may quote the URL: never chain the driver's error (it could carry
            # the password), say what failed in our own words.
            raise JournalError(
                f"cannot reach the PostgreSQL journal at {where}: {type(exc).__name__}"
            ) from None
        journal = cls(db, journal_name, where)
        try:
            await journal._prepare()
        except BaseException:
            await db.close()
            raise
        return journal

    async def _prepare(self) -> None:
        async def prepare() -> None:
            # Every commit is durable when the call returns, whatever the database's default.
            await self._db.execute("SET synchronous_commit = on")
            # The server notices a vanished client (its claims then lapse) in about 25 s.
            for setting, value in (("idle", 10), ("interval", 5), ("count", 3)):
                await self._db.execute(f"SET tcp_keepalives_{setting} = {value}")
            async with self._db.transaction():
                # Two pods creating the tables at once would collide on the catalog: one at a time.
                await self._db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_SPACE,))
                for statement in _SCHEMA:
                    await self._db.execute(statement)
                cursor = await self._db.execute(
                    "SELECT value FROM imagetwin_journal_meta WHERE journal = '' AND key = 'schema'"
                )
                row = await cursor.fetchone()
                if row is None:
                    await self._db.execute(
                        "INSERT INTO imagetwin_journal_meta VALUES ('', 'schema', %s)",
                        (str(_SCHEMA_VERSION),),
                    )
                elif int(row[0]) > _SCHEMA_VERSION:
                    raise JournalError(
                        f"the journal tables at {self._where} were written by a newer "
                        f"imagetwin_async (schema {row[0]})"
                    )
            while True:  # a number no live session holds (a clash is 1 in 2**31 per owner)
                owner = secrets.randbelow(2**31 - 2) + 1
                cursor = await self._db.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_SPACE, owner)
                )
                taken = await cursor.fetchone()
                if taken is not None and taken[0]:
                    self._owner = owner
                    return

        await self._call(prepare)

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self._closed:
            raise JournalError(f"the journal {self!r} is closed")
        # Shielded: a cancelled batch must not leave a write half-sent; it finishes (or fails)
        # in the background, the caller still sees the cancel.
        try:
            return await asyncio.shield(asyncio.ensure_future(fn()))
        except psycopg.Error as exc:
            raise JournalError(
                f"the PostgreSQL journal {self!r} could not be used: {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from None

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async def run() -> list[tuple[Any, ...]]:
            cursor = await self._db.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []

        return await self._call(run)

    # ---- the Journal protocol ---------------------------------------------------------------

    async def entries(self) -> dict[str, JournalEntry]:
        """Every item of this journal, less those another live run is sending right now.

        Takes over the "sending" rows of dead runs only while no other run is sending.
        """

        async def read() -> list[tuple[Any, ...]]:
            async with self._db.transaction():
                # Two runs starting at once must not both see "nobody else sends" and split the
                # dead runs' items: each would settle its part through scan-overview blind to
                # the other's, and both could adopt one scan or resend into the other's window.
                await self._db.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_TAKEOVER_SPACE, self.name)
                )
                cursor = await self._db.execute(
                    f"SELECT 1 FROM imagetwin_journal_items i WHERE journal = %s "
                    f"AND state = 'sending' AND owner IS DISTINCT FROM %s AND {_ALIVE} LIMIT 1",
                    (self.name, self._owner),
                )
                if await cursor.fetchone() is None:
                    await self._db.execute(
                        f"UPDATE imagetwin_journal_items i SET owner = %s WHERE journal = %s "
                        f"AND state = 'sending' AND (owner IS NULL OR NOT {_ALIVE})",
                        (self._owner, self.name),
                    )
            cursor = await self._db.execute(
                f"SELECT {_COLUMNS} FROM imagetwin_journal_items WHERE journal = %s "
                "AND (state <> 'sending' OR owner = %s)",
                (self.name, self._owner),
            )
            return await cursor.fetchall()

        rows = await self._call(read)
        return {row[0]: self._entry(row) for row in rows}

    async def scan_ids(self) -> set[str]:
        """Every scan id this journal holds, whichever run wrote it (``JournalScanIds``).

        A plain read, unlike ``entries``: settling calls it before each decision, so a scan
        another live pod recorded while this run waited for a window to close is known to be
        that pod's, never adopted as an in-doubt item's result.
        """
        rows = await self._rows(
            "SELECT scan_id FROM imagetwin_journal_items WHERE journal = %s "
            "AND scan_id IS NOT NULL",
            (self.name,),
        )
        return {str(row[0]) for row in rows}

    async def in_flight(self) -> dict[str, JournalEntry]:
        """Every item of this journal left "sending", whichever run holds it, alive or dead
        (``JournalInFlight``; each entry's ``live`` says which).

        A plain read, unlike ``entries``: settling calls it before each decision, so a scan
        another live pod's POST registered while its answer is still on its way (its row
        "sending", with no scan id yet) is never adopted as an in-doubt item's result.
        """
        rows = await self._rows(
            f"SELECT {_COLUMNS}, {_ALIVE} FROM imagetwin_journal_items i WHERE journal = %s "
            "AND state = 'sending'",
            (self.name,),
        )
        # ``live``: a dead run's POST will never be answered (its item waits for the next run
        # that starts alone), so settling does not wait for it; its window still counts.
        return {row[0]: attrs.evolve(self._entry(row[:-1]), live=bool(row[-1])) for row in rows}

    async def sending(
        self, key: str, label: str, sent_at: float, until: float | None = None
    ) -> None:
        rows = await self._rows(
            "INSERT INTO imagetwin_journal_items AS i "
            "(journal, key, label, state, sent_at, until, owner, updated_at) "
            "VALUES (%s, %s, %s, 'sending', %s, %s, %s, %s) "
            "ON CONFLICT (journal, key) DO UPDATE SET label = excluded.label, state = 'sending', "
            "sent_at = excluded.sent_at, until = excluded.until, answered_at = NULL, "
            "scan_id = NULL, result = NULL, error = NULL, "
            "note = NULL, updated_at = excluded.updated_at "
            "WHERE i.owner = excluded.owner "
            "RETURNING 1",
            (self.name, key, label, sent_at, until, self._owner, time.time()),
        )
        if not rows:
            raise JournalLocked(
                f"{label}: another run of the journal {self.name!r} holds this item (or ran "
                "it since this run started); nothing was sent. Re-run to pick up its outcome."
            )

    async def started(
        self, key: str, scan_id: str, note: str | None = None, answered_at: float | None = None
    ) -> None:
        await self._update(
            "UPDATE imagetwin_journal_items i SET state = 'started', scan_id = %s, "
            "note = COALESCE(%s, note), answered_at = COALESCE(%s, answered_at), "
            "updated_at = %s "
            "WHERE journal = %s AND key = %s AND owner = %s RETURNING 1",
            (scan_id, note, answered_at, time.time(), self.name, key, self._owner),
            key,
        )

    async def finished(self, key: str, result: ScanResult) -> None:
        # Also by a run that only waited for someone else's scan: a scan's result is the same
        # whoever reads it, so the row is written if it is ours or names that scan.
        await self._update(
            "UPDATE imagetwin_journal_items i SET state = 'done', scan_id = %s, result = %s, "
            "updated_at = %s WHERE journal = %s AND key = %s "
            "AND (owner = %s OR scan_id = %s) RETURNING 1",
            (
                result.scan_id,
                json.dumps(unstructure(result)),
                time.time(),
                self.name,
                key,
                self._owner,
                result.scan_id,
            ),
            key,
        )

    async def failed(self, key: str, error: str) -> None:
        await self._update(
            "UPDATE imagetwin_journal_items i SET state = 'failed', error = %s, updated_at = %s "
            "WHERE journal = %s AND key = %s AND (owner = %s OR scan_id IS NOT NULL) RETURNING 1",
            (error, time.time(), self.name, key, self._owner),
            key,
        )

    async def forget(self, key: str) -> None:
        await self._update(
            "DELETE FROM imagetwin_journal_items WHERE journal = %s AND key = %s AND owner = %s "
            "RETURNING 1",
            (self.name, key, self._owner),
            key,
        )

    async def load_meta(self, key: str) -> str | None:
        """A value stored with ``store_meta`` for this journal, or None."""
        rows = await self._rows(
            "SELECT value FROM imagetwin_journal_meta WHERE journal = %s AND key = %s",
            (self.name, key),
        )
        return str(rows[0][0]) if rows else None

    async def store_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` for this journal (durable when it returns)."""
        await self._rows(
            "INSERT INTO imagetwin_journal_meta VALUES (%s, %s, %s) "
            "ON CONFLICT (journal, key) DO UPDATE SET value = excluded.value",
            (self.name, key, value),
        )

    async def close(self) -> None:
        """Close the connection, which releases every claim of this run. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- helpers ----------------------------------------------------------------------------

    async def _update(self, sql: str, params: tuple[Any, ...], key: str) -> None:
        if not await self._rows(sql, params):
            raise JournalError(
                f"the journal {self.name!r} no longer lets this run write item {key[:12]}: "
                "its claim was lost (the connection dropped and another run took it over)"
            )

    def _entry(self, row: tuple[Any, ...]) -> JournalEntry:
        key, label, state, sent_at, scan_id, result, error, note, until, answered_at = row
        parsed: ScanResult | None = None
        if result is not None:
            try:
                parsed = structure(json.loads(result), ScanResult)
            except (ValueError, ImagetwinError) as exc:
                raise JournalError(f"{self!r}: the result stored for {label} is damaged") from exc
        return JournalEntry(
            key,
            label,
            state,
            float(sent_at),
            scan_id,
            parsed,
            error,
            note,
            until=None if until is None else float(until),
            answered_at=None if answered_at is None else float(answered_at),
        )


def _split(url: str) -> tuple[str, str, str]:
    """The libpq URL without its fragment, the fragment, and host/database for messages."""
    parts = urlsplit(url)
    where = f"{parts.hostname or 'localhost'}{f':{parts.port}' if parts.port else ''}{parts.path}"
    return urlunsplit(parts._replace(fragment="")), parts.fragment, where


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
