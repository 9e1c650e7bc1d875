"""What the commands print: one ``Row`` per scan, as a rich table, JSON or CSV.

Tables are for people (stdout, colours when it is a terminal); ``--json`` and ``--csv`` are
for scripts and carry the full scan ids, URLs and error types. Exit codes are decided here
too, from the same rows, so the output and ``$?`` always agree.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeAlias

import attrs
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._errors import ImagetwinError
from .._models import ScanOverview, ScanResult
from ._exitcodes import ExitCode
from ._messages import short_error

__all__ = [
    "OutputFormat",
    "Row",
    "exit_code",
    "print_overview",
    "print_rows",
]

OutputFormat: TypeAlias = Literal["table", "json", "csv"]
Status: TypeAlias = Literal["clean", "findings", "error", "running", "submitted"]

_CSV_FIELDS = (
    "source",
    "files",
    "scan_id",
    "status",
    "alteration_count",
    "local_duplicate_count",
    "extern_duplicate_count",
    "ai_image_count",
    "highest_score",
    "min_score",
    "result_url",
    "pdf_report",
    "report_file",
    "error_type",
    "error",
)


@attrs.frozen
class Row:
    """One scan in the output: what was scanned, its id, and its result or error."""

    source: str
    files: tuple[str, ...] = ()
    scan_id: str | None = None
    result: ScanResult | None = None
    error: ImagetwinError | None = None
    running: bool = False  # accepted, no result (yet): --no-wait, or `result` of a running scan
    report_file: str | None = None

    @property
    def status(self) -> Status:
        if self.error is not None:
            return "error"
        if self.result is not None:
            return "clean" if self.result.clean else "findings"
        return "running" if self.running else "submitted"

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "source": self.source,
            "files": list(self.files),
            "scan_id": self.scan_id,
            "status": self.status,
            "alteration_count": r.alteration_count if r else None,
            "local_duplicate_count": r.local_duplicate_count if r else None,
            "extern_duplicate_count": r.extern_duplicate_count if r else None,
            "ai_image_count": r.ai_image_count if r else None,
            "highest_score": r.highest_score if r else None,
            "min_score": r.min_score if r else None,
            "result_url": r.result_url if r else None,
            "pdf_report": r.pdf_report if r else None,
            "report_file": self.report_file,
            "error": (
                None
                if self.error is None
                else {"type": type(self.error).__name__, "message": str(self.error)}
            ),
        }


def exit_code(rows: Iterable[Row]) -> ExitCode:
    """3 if anything failed, else 1 if anything was found, else 0 (see ``ExitCode``)."""
    statuses = {row.status for row in rows}
    if "error" in statuses:
        return ExitCode.ERROR
    if "findings" in statuses:
        return ExitCode.FINDINGS
    return ExitCode.CLEAN


def summary(rows: Sequence[Row]) -> dict[str, int]:
    counts = {"total": len(rows), "clean": 0, "findings": 0, "error": 0, "running": 0}
    for row in rows:
        key = "running" if row.status == "submitted" else row.status
        counts[key] += 1
    return {
        "total": counts["total"],
        "clean": counts["clean"],
        "with_findings": counts["findings"],
        "errors": counts["error"],
        "not_finished": counts["running"],
    }


def print_rows(
    console: Console,
    rows: Sequence[Row],
    fmt: OutputFormat,
    *,
    elapsed: float | None = None,
    interrupted: bool = False,
    code: ExitCode | None = None,
) -> None:
    """Print ``rows`` to ``console`` (stdout) as a table, JSON or CSV.

    ``code`` is the exit code the command will return, when it is not ``exit_code(rows)``
    (``imagetwin result`` of a running scan exits 4): the JSON summary says the same.
    """
    if code is None:
        code = ExitCode.INTERRUPTED if interrupted else exit_code(rows)
    if fmt == "json":
        document = {
            "summary": {
                **summary(rows),
                "exit_code": int(code),
                "interrupted": interrupted,
            },
            "scans": [row.as_dict() for row in rows],
        }
        _write(console, json.dumps(document, indent=2) + "\n")
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            data = row.as_dict()
            error = data.pop("error")
            data["files"] = ";".join(row.files)
            data["error_type"] = error["type"] if error else None
            data["error"] = error["message"] if error else None
            writer.writerow(data)
        _write(console, buffer.getvalue())
    else:
        console.print(_table(rows, console.width))
        console.print(_footer(rows, elapsed))
        shortened = console.width < _FULL_ID_WIDTH and any(row.files for row in rows)
        if shortened and any(row.scan_id for row in rows):
            console.print(Text("Scan ids shortened: --json or --csv give them whole.", style="dim"))


def _write(console: Console, text: str) -> None:
    # Straight to the file: rich would wrap long lines and interpret [brackets] as markup.
    console.file.write(text)
    console.file.flush()


# A full scan id is 64 characters: wider terminals show it whole, narrower ones a prefix
# (enough to tell scans apart; --json and --csv always carry the full id).
_FULL_ID_WIDTH = 170
_ID_PREFIX = 10


def _table(rows: Sequence[Row], width: int) -> Table:
    # `result` and `wait` rows have no files: the scan id is what names them, in full.
    by_id = not any(row.files for row in rows)
    full_ids = by_id or width >= _FULL_ID_WIDTH
    prefix = _common_directory(rows)
    table = Table(
        title=f"in {prefix}{os.sep}" if prefix else None,
        title_justify="left",
        title_style="dim",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),  # the box's blank column separators already space columns out
    )
    if not by_id:
        table.add_column("Source", overflow="fold", min_width=16)
    table.add_column("Scan ID", overflow="fold")
    # Two-line headers keep the five number columns narrow enough for 80 columns.
    for name in ("Alter-\nations", "Local\ndup.", "Extern\ndup.", "AI", "Max\nscore"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Status", overflow="fold", min_width=10)
    for row in rows:
        r = row.result
        counts: list[Text | str] = (
            [
                _count(r.alteration_count),
                _count(r.local_duplicate_count),
                _count(r.extern_duplicate_count),
                _count(r.ai_image_count),
                "-" if r.highest_score is None else f"{r.highest_score:.2f}",
            ]
            if r is not None
            else ["", "", "", "", ""]
        )
        scan_id = row.scan_id or "-"
        if not full_ids and len(scan_id) > _ID_PREFIX + 1:
            scan_id = scan_id[:_ID_PREFIX] + "…"
        source = row.source[len(prefix) + 1 :] if prefix else row.source
        cells = [] if by_id else [Text(source)]
        table.add_row(*cells, scan_id, *counts, _status(row))
    return table


def _common_directory(rows: Sequence[Row]) -> str:
    """The directory every scanned file is in (shown once, above the table), or ''."""
    files = [f for row in rows for f in row.files]
    if len(rows) < 2 or not all(row.files for row in rows):
        return ""
    try:
        common = os.path.commonpath([os.path.dirname(os.path.normpath(f)) for f in files])
    except ValueError:  # absolute and relative paths mixed, or different drives
        return ""
    if common in {"", ".", os.sep} or not all(r.source.startswith(common + os.sep) for r in rows):
        return ""
    return common


def _count(value: int | None) -> Text:
    if value is None:
        return Text("-", style="dim")
    return Text(str(value), style="bold red" if value else "dim")


def _status(row: Row) -> Text:
    status = row.status
    if status == "error":
        assert row.error is not None
        return Text(short_error(row.error), style="red")
    if status == "findings":
        assert row.result is not None
        n = row.result.finding_count
        return Text(f"{n} finding{'s' if n != 1 else ''}", style="bold yellow")
    if status == "clean":
        return Text("clean", style="green")
    return Text(status, style="cyan")


def _footer(rows: Sequence[Row], elapsed: float | None) -> Text:
    s = summary(rows)
    parts = [
        Text(f"{s['total']} scan{'s' if s['total'] != 1 else ''}: "),
        Text(f"{s['clean']} clean", style="green"),
        Text(", "),
        Text(f"{s['with_findings']} with findings", style="yellow" if s["with_findings"] else ""),
        Text(", "),
        Text(f"{s['errors']} failed", style="red" if s["errors"] else ""),
    ]
    if s["not_finished"]:
        parts += [Text(", "), Text(f"{s['not_finished']} not finished", style="cyan")]
    if elapsed is not None:
        parts.append(Text(f" in {elapsed:.1f} s", style="dim"))
    return Text.assemble(*parts)


def print_overview(console: Console, overview: ScanOverview, fmt: OutputFormat) -> None:
    """The scans of ``imagetwin overview``, as a table or JSON (CSV comes from the server)."""
    if fmt == "json":
        document = {
            "start_date": overview.start_date.isoformat(),
            "end_date": overview.end_date.isoformat(),
            "scans": [
                {
                    "scan_id": s.scan_id,
                    "scan_date": s.scan_date.isoformat(),
                    "user": s.user,
                    "free_of_charge": s.free_of_charge,
                    "api_scan": s.api_scan,
                }
                for s in overview.scans
            ],
        }
        _write(console, json.dumps(document, indent=2) + "\n")
        return
    table = Table(
        title=f"Scans {overview.start_date} to {overview.end_date} (UTC)", header_style="bold"
    )
    table.add_column("Scan ID", no_wrap=True)
    table.add_column("Date (UTC)", no_wrap=True)
    table.add_column("User", overflow="fold")
    table.add_column("Free", justify="center")
    table.add_column("API", justify="center")
    for s in overview.scans:
        table.add_row(
            s.scan_id,
            s.scan_date.strftime("%Y-%m-%d %H:%M:%S"),
            s.user or "",
            "yes" if s.free_of_charge else "",
            "yes" if s.api_scan else "",
        )
    console.print(table)
    console.print(Text(f"{len(overview.scans)} scans", style="dim"))
