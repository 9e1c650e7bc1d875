"""The exit codes of ``imagetwin``: one table, documented in docs/cli.md.

Kept free of click and rich, so ``main`` can use it when the ``cli`` extra is missing.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    """What a script can tell from ``$?``; errors win over findings."""

    CLEAN = 0  # every scan finished and found nothing at or above --min-score
    FINDINGS = 1  # at least one scan found something, and nothing went wrong
    USAGE = 2  # bad option or path, no API key, missing extra: nothing was sent (click uses 2)
    ERROR = 3  # at least one item failed: rejected upload, failed scan, 401, network, time-out
    RUNNING = 4  # `imagetwin result`: the scan has not finished yet
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
