# pyright: strict
"""How a batch's outcomes narrow, under both mypy --strict and pyright. Only type-checked.

Batches hand back ``ScanSuccess[S] | ScanFailure[S]``: ``ok`` is ``Literal[True]`` on one and
``Literal[False]`` on the other, ``result`` is ``ScanResult`` / ``None`` and ``error`` is
``None`` / ``ImagetwinError``. Every form below narrows the union in both checkers, except
a bare ``if outcome.ok:``: mypy narrows it, pyright by design narrows a union on a literal
field only through ``==``, ``!=``, ``is`` and ``is not`` (its "Type Guards" documentation;
microsoft/pyright#6113, #1841). Those lines carry a pyright ignore for exactly the failed
assertion, so the day pyright narrows them too, its unnecessary-ignore check says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, assert_type

from imagetwin_async import (
    ImagetwinClient,
    ImagetwinError,
    ScanFailure,
    ScanOutcome,
    ScanResult,
    ScanSuccess,
)

Outcome = ScanSuccess[str] | ScanFailure[str]


def ok_is_true(outcome: Outcome) -> None:
    if outcome.ok is True:
        assert_type(outcome, ScanSuccess[str])
        assert_type(outcome.result, ScanResult)
    else:
        assert_type(outcome, ScanFailure[str])
        assert_type(outcome.error, ImagetwinError)


def ok_is_false(outcome: Outcome) -> None:
    if outcome.ok is False:
        assert_type(outcome, ScanFailure[str])
    else:
        assert_type(outcome, ScanSuccess[str])


def ok_is_not_true(outcome: Outcome) -> None:
    if outcome.ok is not True:
        assert_type(outcome, ScanFailure[str])
        return
    assert_type(outcome, ScanSuccess[str])


def result_is_not_none(outcome: Outcome) -> None:
    if outcome.result is not None:
        assert_type(outcome, ScanSuccess[str])
        assert_type(outcome.result.finding_count, int)
    else:
        assert_type(outcome, ScanFailure[str])


def error_is_none(outcome: Outcome) -> None:
    if outcome.error is None:
        assert_type(outcome, ScanSuccess[str])
    else:
        assert_type(outcome, ScanFailure[str])
        assert_type(outcome.error, ImagetwinError)


def by_class(outcome: Outcome) -> None:
    if isinstance(outcome, ScanSuccess):
        assert_type(outcome, ScanSuccess[str])
    else:
        assert_type(outcome, ScanFailure[str])


def by_match(outcome: Outcome) -> None:
    match outcome:
        case ScanSuccess(result=result):
            assert_type(outcome, ScanSuccess[str])
            assert_type(result, ScanResult)
        case ScanFailure(error=error):
            assert_type(outcome, ScanFailure[str])
            assert_type(error, ImagetwinError)


def ok_truthiness(outcome: Outcome) -> None:
    """mypy only: pyright does not narrow a union on a bare literal field (see above)."""
    if outcome.ok:
        assert_type(outcome, ScanSuccess[str])  # pyright: ignore[reportAssertTypeFailure]
    else:
        assert_type(outcome, ScanFailure[str])  # pyright: ignore[reportAssertTypeFailure]
    if not outcome.ok:
        assert_type(outcome, ScanFailure[str])  # pyright: ignore[reportAssertTypeFailure]


def the_literals(success: ScanSuccess[str], failure: ScanFailure[str]) -> None:
    # Each kind states its fields: no test needed.
    assert_type(success.ok, Literal[True])
    assert_type(failure.ok, Literal[False])
    assert_type(success.result, ScanResult)
    assert_type(success.error, None)
    assert_type(failure.error, ImagetwinError)
    assert_type(failure.result, None)


async def from_a_batch(client: ImagetwinClient, paths: list[str]) -> None:
    outcomes = await client.submit_and_wait(paths)
    assert_type(outcomes, list[ScanSuccess[str] | ScanFailure[str]])
    for outcome in outcomes:
        assert_type(outcome.source, str)
        match outcome:
            case ScanSuccess(result=result):
                print(outcome.source, result.finding_count)
            case ScanFailure(error=error):
                print(outcome.source.upper(), error)
    # The base class is what code that takes any outcome names; it narrows no further.
    widened: Sequence[ScanOutcome[str]] = outcomes
    for any_outcome in widened:
        assert_type(any_outcome.result, ScanResult | None)
    async for streamed in client.iter_outcomes([["fig1.png", "fig2.png"]]):
        assert_type(streamed.source, list[str])
        if streamed.result is not None:
            assert_type(streamed, ScanSuccess[list[str]])
