"""Which journal a batch's ``journal=`` names: a ``Journal``, a file, or a PostgreSQL URL.

Kept apart from both stores so neither imports the other, and so the PostgreSQL driver (the
``postgres`` extra) is imported only when a URL asks for it.
"""

from __future__ import annotations

import os

from ._journal import Journal, JournalError
from ._journal import open_journal as open_file_or_store

__all__ = ["is_postgres_url", "open_journal"]


def is_postgres_url(value: object) -> bool:
    """Whether ``journal=`` names a PostgreSQL journal rather than a file."""
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


async def open_journal(journal: str | os.PathLike[str] | Journal) -> tuple[Journal, bool]:
    """The store for ``journal`` and whether we opened it (and so must close it).

    ``postgresql://host/db#name`` opens a ``PostgresJournal``; a path, the SQLite journal.
    """
    if is_postgres_url(journal):
        assert isinstance(journal, str)
        try:
            from ._journal_postgres import PostgresJournal  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise JournalError(
                "a postgresql:// journal needs the postgres extra: "
                "pip install 'imagetwin-async[postgres]'"
            ) from exc
        return await PostgresJournal.open(journal), True
    return await open_file_or_store(journal)
