"""Where the poll scheduler keeps what it learned between runs: ``ModelStore`` and two stores.

A store holds one opaque string (``DurationModel.state()``, JSON). The scheduler loads it
before its first wait and saves it when it closes, so a CLI run, a restarted service or the
re-run of a batch starts from the durations seen last time instead of from nothing.

- ``FileModelStore``: a small file in the user's cache directory (what the CLI uses),
  written atomically (a temporary file renamed over the old one).
- ``JournalModelStore``: inside a batch journal (its ``meta`` table), so a resumed batch
  resumes its schedule too.
- A store shared by a fleet (Redis, a database) implements the same two methods.

A store that fails or holds garbage costs a log line and a cold start, never a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

__all__ = ["FileModelStore", "JournalModelStore", "MetaStore", "ModelStore", "default_cache_path"]

logger = logging.getLogger("imagetwin_async.polling")

# A state holds at most a few hundred observations (~20 KB); anything far larger is not ours.
_MAX_STATE_BYTES: Final = 1 << 20
_META_KEY: Final = "duration_model"


@runtime_checkable
class ModelStore(Protocol):
    """Keeps one duration-model state (a JSON string) between runs.

    class MyStore:
        async def load(self) -> str | None: return await db.get("model")
        async def save(self, state: str) -> None: await db.set("model", state)

    client = ImagetwinClient(model_store=MyStore())
    """

    async def load(self) -> str | None:
        """The last saved state, or None if there is none."""
        ...

    async def save(self, state: str) -> None:
        """Replace the saved state."""
        ...


def default_cache_path(app: str = "imagetwin") -> Path:
    """``<user cache dir>/imagetwin/durations.json``: platformdirs' cache directory when it is
    installed (the ``cli`` extra), else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    try:
        import platformdirs  # noqa: PLC0415 - optional: only the CLI extra installs it
    except ImportError:  # pragma: no cover - the dev extra installs it
        base = os.environ.get("XDG_CACHE_HOME") or (
            os.environ.get("LOCALAPPDATA") if sys.platform == "win32" else None
        )
        root = Path(base) if base else Path.home() / ".cache"
        return root / app / "durations.json"
    return Path(platformdirs.user_cache_dir(app, appauthor=False)) / "durations.json"


class FileModelStore:
    """A duration-model state in a small file, written atomically.

        store = FileModelStore()                    # ~/.cache/imagetwin/durations.json
        client = ImagetwinClient(model_store=store)

    A missing file is a cold start; an unreadable or oversized one is logged and ignored
    (the next save replaces it). Writes go to a temporary file in the same directory, which
    then replaces the old one, so a crash mid-write never leaves half a file.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path: Path = Path(path) if path is not None else default_cache_path()

    def __repr__(self) -> str:
        return f"FileModelStore({str(self.path)!r})"

    async def load(self) -> str | None:
        return await asyncio.to_thread(self._load)

    async def save(self, state: str) -> None:
        await asyncio.to_thread(self._save, state)

    def _load(self) -> str | None:
        try:
            with self.path.open("rb") as file:
                data = file.read(_MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("ignoring the duration cache %s: %s", self.path, exc)
            return None
        if len(data) > _MAX_STATE_BYTES:
            logger.warning("ignoring the duration cache %s: larger than 1 MiB", self.path)
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            logger.warning("ignoring the duration cache %s: not UTF-8", self.path)
            return None

    def _save(self, state: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".durations-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(state)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@runtime_checkable
class MetaStore(Protocol):
    """The part of a ``Journal`` a ``JournalModelStore`` uses."""

    async def load_meta(self, key: str) -> str | None: ...

    async def store_meta(self, key: str, value: str) -> None: ...


class JournalModelStore:
    """A duration-model state kept in a batch journal's ``meta`` table.

    store = JournalModelStore(journal)          # a SQLiteJournal, or any Journal
    """

    def __init__(self, journal: MetaStore, key: str = _META_KEY) -> None:
        self.journal = journal
        self.key = key

    async def load(self) -> str | None:
        return await self.journal.load_meta(self.key)

    async def save(self, state: str) -> None:
        await self.journal.store_meta(self.key, state)
