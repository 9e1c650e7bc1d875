"""The servers some tests need (Redis, PostgreSQL): where they are, and one rule for when they
are not there: skip on a laptop, fail in CI (``CI`` set), where they must run.

    url = require_redis()        # in a fixture: the URL, or a skip / a failure naming the fix
"""

from __future__ import annotations

import os

import psycopg
import pytest
import redis

REDIS_URL = os.environ.get("IMAGETWIN_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("IMAGETWIN_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


def _missing(what: str, message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the {what} tests: {message}")
    pytest.skip(message)


def require_redis() -> str:
    """``IMAGETWIN_REDIS_URL`` (database 15 by default, written to), once it answers a PING."""
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.exceptions.RedisError, OSError) as exc:
        _missing(
            "Redis",
            f"no Redis at {REDIS_URL} ({exc}). Start one (`redis-server --port 6379 --save ''`) "
            "or point IMAGETWIN_REDIS_URL at one (its database is written to)",
        )
    return REDIS_URL


def require_postgres() -> str:
    """``IMAGETWIN_POSTGRES_URL``, once a connection opens (tests work in schemas of their own)."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        _missing(
            "PostgreSQL",
            f"no PostgreSQL at {POSTGRES_URL} ({type(exc).__name__}). Start one, or point "
            "IMAGETWIN_POSTGRES_URL at one (a schema per test is created and dropped)",
        )
    return POSTGRES_URL
