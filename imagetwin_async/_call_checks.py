"""Checks of call options, made before anything is sent: a bad one is ``InvalidArgument``
(an ``ImagetwinError`` and a ``ValueError``), never a bare ``TypeError`` from deep inside.

    >>> check_timeout("abc")
    Traceback (most recent call last):
    InvalidArgument: timeout must be a number of seconds >= 0 or None, got 'abc'

Pure functions over plain values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any, TypeVar

from ._errors import InvalidArgument

__all__ = ["check_batch", "check_batch_options", "check_max_retries", "check_timeout"]

T = TypeVar("T")

_AMBIGUOUS = ("settle", "report", "resubmit")


def check_timeout(value: object, name: str = "timeout") -> float | None:
    """``value`` as seconds (None: no limit), or ``InvalidArgument``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
    ):
        raise InvalidArgument(f"{name} must be a number of seconds >= 0 or None, got {value!r}")
    return float(value)


def check_max_retries(value: object) -> int | None:
    """``value`` as a number of retries (None: the client's), or ``InvalidArgument``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"max_retries must be a whole number >= 0, got {value!r}")
    return value


def check_batch(batch: Iterable[T]) -> list[T]:
    """The batch as a list, or ``InvalidArgument`` if it is not a collection of items."""
    if isinstance(batch, str | bytes | os.PathLike):
        raise InvalidArgument(
            f"batch must be a list of items (paths, FileContent, lists of images), got "
            f"{type(batch).__name__}: to scan one file, pass [file]"
        )
    try:
        return list(batch)
    except TypeError:
        raise InvalidArgument(
            f"batch must be an iterable of items, got {type(batch).__name__}"
        ) from None


def check_batch_options(options: Any, *, journal_type: type[Any]) -> None:
    """A batch's options that are not scan options (those go to ``build_scan_request``):
    ``timeout``, ``submit_concurrency``, ``journal``, ``ambiguous``, ``progress``,
    ``max_unanswered_scans`` and ``settle_delay``."""
    timeout, progress = options.timeout, options.progress
    submit_concurrency, journal = options.submit_concurrency, options.journal
    ambiguous = options.ambiguous
    check_timeout(timeout)
    if (
        isinstance(submit_concurrency, bool)
        or not isinstance(submit_concurrency, int)
        or submit_concurrency < 1
    ):
        raise InvalidArgument(
            f"submit_concurrency must be a whole number >= 1, got {submit_concurrency!r}"
        )
    if journal is not None and not isinstance(journal, str | os.PathLike | journal_type):
        raise InvalidArgument(
            f"journal must be a path, a Journal or None, got {type(journal).__name__}"
        )
    if ambiguous not in _AMBIGUOUS:
        raise InvalidArgument(
            f"ambiguous must be 'settle', 'report' or 'resubmit', got {ambiguous!r}"
        )
    if progress is not None and not callable(progress):
        raise InvalidArgument(f"progress must be callable or None, got {type(progress).__name__}")
    unanswered = options.max_unanswered_scans
    if isinstance(unanswered, bool) or not isinstance(unanswered, int) or unanswered < 1:
        raise InvalidArgument(
            f"max_unanswered_scans must be a whole number >= 1, got {unanswered!r}"
        )
    settle_delay = options.settle_delay
    if (
        isinstance(settle_delay, bool)
        or not isinstance(settle_delay, int | float)
        or not settle_delay >= 0
    ):
        raise InvalidArgument(
            f"settle_delay must be a number of seconds >= 0, got {settle_delay!r}"
        )
