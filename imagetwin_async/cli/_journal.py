"""``imagetwin journal settle``: the items a crash left in doubt, settled by hand.

    imagetwin journal settle sweep.journal                      # list them, with candidates
    imagetwin journal settle sweep.journal --adopt paper.pdf 9f3c...   # it started this scan
    imagetwin journal settle sweep.journal --resend paper.pdf   # it started none: send again

Works on the journal file alone (no API key, nothing sent): the candidates are those the
last run's settling found in scan-overview. Check them there (``imagetwin overview``) or in
the web app before adopting one.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from .._errors import ImagetwinError
from .._journal import SQLiteJournal
from .._recovery import InDoubt, in_doubt, settle_by_hand
from ._exitcodes import ExitCode

__all__ = ["journal"]


@click.group()
def journal() -> None:
    """Inspect a batch journal (scan --journal) and settle its in-doubt items."""


@journal.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--adopt",
    nargs=2,
    multiple=True,
    metavar="ITEM SCAN_ID",
    help="ITEM (its file name or key) started SCAN_ID: the next run waits for its result.",
)
@click.option(
    "--resend",
    multiple=True,
    metavar="ITEM",
    help="ITEM started no scan: the next run sends it again (billed again if it did).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the items left in doubt as JSON.")
def settle(
    path: Path, adopt: tuple[tuple[str, str], ...], resend: tuple[str, ...], as_json: bool
) -> int:
    """List the items whose scan POST may or may not have started a scan, or settle them.

    Exit code 0 when no item is left in doubt, 3 when some are.
    """
    try:
        left = asyncio.run(_settle(path, adopt, resend))
    except ImagetwinError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([_as_json(item) for item in left], indent=2))
    elif not left:
        click.echo("No item is in doubt.")
    for item in [] if as_json else left:
        click.echo(_describe(item))
    return ExitCode.ERROR if left else ExitCode.CLEAN


async def _settle(
    path: Path, adopt: tuple[tuple[str, str], ...], resend: tuple[str, ...]
) -> list[InDoubt]:
    async with await SQLiteJournal.open(path) as store:
        items = await in_doubt(store)
        for name, scan_id in adopt:
            await settle_by_hand(store, _find(items, name).key, adopt=scan_id)
        for name in resend:
            await settle_by_hand(store, _find(items, name).key, adopt=None)
        return await in_doubt(store)


def _find(items: list[InDoubt], name: str) -> InDoubt:
    found = [i for i in items if i.label == name or (len(name) >= 6 and i.key.startswith(name))]
    if len(found) != 1:
        which = "no" if not found else "more than one"
        raise click.UsageError(
            f"{which} in-doubt item matches {name!r}: give its file name, or its key "
            "(6 characters or more) when two items share a name"
        )
    return found[0]


def _describe(item: InDoubt) -> str:
    window = (
        f"{item.window[0]:%Y-%m-%d %H:%M:%S} to {item.window[1]:%H:%M:%S} UTC (service time)"
        if item.window
        else f"sent at {item.sent_at:%Y-%m-%d %H:%M:%S}"
    )
    candidates = ", ".join(item.candidates) if item.candidates else "none listed"
    return (
        f"{item.label}  key {item.key}\n  window: {window}\n  may have started: {candidates}\n"
        f"  why in doubt: {item.reason}"
    )


def _as_json(item: InDoubt) -> dict[str, object]:
    return {
        "key": item.key,
        "label": item.label,
        "sent_at": item.sent_at.isoformat(),
        "window": [w.isoformat() for w in item.window] if item.window else None,
        "candidates": list(item.candidates),
        "reason": item.reason,
    }
