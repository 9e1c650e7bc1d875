"""The click commands of ``imagetwin`` and the one place where errors become messages.

Every command that talks to the API builds a coroutine and hands it to ``_execute``, which
opens the client (or the in-process emulator), runs it, and turns what can go wrong (no key,
a bad path, an ``ImagetwinError``, Ctrl-C) into one red line and an exit code from
``ExitCode``. Tracebacks are left for bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import attrs
import click
from rich.console import Console
from rich.text import Text

from .. import __version__
from .._batch import BatchKwargs, BatchProgress
from .._client import API_KEY_ENV, DEFAULT_BASE_URL, ImagetwinClient
from .._errors import (
    AmbiguousSubmission,
    AuthenticationError,
    ConfigurationError,
    ImagetwinError,
    InvalidArgument,
    TransportError,
)
from .._models import ScanResult
from ._connect import (
    BASE_URL_ENV,
    Connection,
    MissingKey,
    open_client,
    typical_scan_seconds,
)
from ._discover import PathError, discover
from ._emulator_command import serve_emulator
from ._exitcodes import ExitCode
from ._inputs import expand
from ._journal import journal
from ._messages import Message, describe, hint_for, missing_key
from ._output import OutputFormat, Row, exit_code, print_overview, print_rows
from ._progress import BatchDisplay, estimate_seconds_left
from ._run import RunState, ScanOptions, fetch_result, run_scan, run_submit, run_wait

__all__ = ["cli", "run"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


# ---- option types -----------------------------------------------------------------------


class Duration(click.ParamType):  # type: ignore[type-arg]  # subscripting fails on older click
    """Seconds, or a number with a unit: ``90``, ``90s``, ``30m``, ``2h``."""

    name = "duration"
    _UNITS: ClassVar[dict[str, float]] = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float):
            return float(value)
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", str(value))
        if match is None or float(match[1]) <= 0:
            self.fail(f"{value!r} is not a duration like 90, 90s, 30m or 2h", param, ctx)
        return float(match[1]) * self._UNITS[match[2]]


@attrs.frozen
class Globals:
    """The group's options, handed to every command through ``ctx.obj``."""

    api_key: str | None
    base_url: str
    speed: float
    verbose: bool

    def connection(self, *, emulator: bool, request_timeout: float | None = None) -> Connection:
        return Connection(self.api_key, self.base_url, self.speed, emulator, request_timeout)


def _output_options(function: F) -> F:
    """``--json`` / ``--csv`` / ``--format`` and ``--progress/--no-progress``."""
    function = click.option(
        "--progress/--no-progress",
        default=None,
        help="Draw the progress display on stderr (default: when stderr is a terminal).",
    )(function)
    function = click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "json", "csv"]),
        default=None,
        help="Output format on stdout (default: table).",
    )(function)
    function = click.option("--csv", "as_csv", is_flag=True, help="Same as --format csv.")(function)
    return click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(function)


def _request_timeout_option(*names: str) -> Callable[[F], F]:
    """``--request-timeout`` (and, where no wait is bounded, ``--timeout``): seconds for each
    request of the command (a read, the report download) instead of the default 5 minutes."""
    return click.option(
        *names,
        "request_timeout",
        type=Duration(),
        default=None,
        help="Give up each request (a read, a download) after this long (10s, 2m); default 5m.",
    )


def _emulator_option(function: F) -> F:
    return click.option(
        "--emulator",
        is_flag=True,
        help="Run against a built-in emulator (no key needed, nothing billed): to try things.",
    )(function)


def _output_format(fmt: str | None, as_json: bool, as_csv: bool) -> OutputFormat:
    chosen = [f for f, on in ((fmt, fmt is not None), ("json", as_json), ("csv", as_csv)) if on]
    if len(set(chosen)) > 1:
        raise click.UsageError("choose one of --json, --csv and --format")
    value = chosen[0] if chosen else "table"
    if value == "json":
        return "json"
    return "csv" if value == "csv" else "table"


# ---- the group ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    show_envvar=True,
    metavar="KEY",
    help="Your Imagetwin API key (never printed or logged).",
)
@click.option(
    "--base-url",
    envvar=BASE_URL_ENV,
    show_envvar=True,
    default=DEFAULT_BASE_URL,
    show_default=True,
    metavar="URL",
    help="The API's base URL: a proxy, or an emulator started with `imagetwin emulator`.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=1.0),
    default=1.0,
    metavar="N",
    help="Only with an emulator started with --speed N: make the client's timings N times "
    "faster to match.",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Log requests and rate-limit decisions to stderr."
)
@click.version_option(__version__, prog_name="imagetwin")
@click.pass_context
def cli(
    ctx: click.Context, api_key: str | None, base_url: str, speed: float, verbose: bool
) -> None:
    """Check papers and figures for image-integrity issues with Imagetwin.

    \b
    Try it with no key, against a built-in emulator:
      imagetwin scan --emulator --samples
    With a key (IMAGETWIN_API_KEY or --api-key), every scan is billed.

    Exit codes: 0 all clean, 1 findings, 2 usage error (nothing sent), 3 errors, 4 still
    running (result), 130 interrupted.
    """
    if speed != 1.0 and base_url.rstrip("/") == DEFAULT_BASE_URL:
        raise click.UsageError("--speed is only for an emulator (see --base-url)")
    ctx.obj = Globals(api_key or None, base_url, speed, verbose)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line; every outcome becomes an exit code (see ``ExitCode``)."""
    try:
        result = cli.main(
            args=None if argv is None else list(argv),
            prog_name="imagetwin",
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        return ExitCode.INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return ExitCode.USAGE
    except Exception as exc:  # a bug must not exit 1, the code for "findings"
        # Only the type: a foreign message may quote what it was given (a URL, a key).
        print(
            f"imagetwin: unexpected error ({type(exc).__name__}); this is a bug, please report "
            "it with the command that caused it (without your API key)",
            file=sys.stderr,
        )
        return ExitCode.ERROR
    return int(result or 0)


# ---- running a command ----------------------------------------------------------------------


def _consoles(progress: bool | None) -> tuple[Console, Console]:
    """(stdout, stderr) consoles; ``progress=True`` forces a terminal on stderr.

    Piped or redirected, stdout is never wrapped: a row stays one line (whole ids, a
    ``grep file.pdf`` finds it), whatever COLUMNS says.
    """
    err = Console(stderr=True, force_terminal=True) if progress else Console(stderr=True)
    out = Console()
    if not out.is_terminal:
        out = Console(width=_UNWRAPPED)
    return out, err


# Wide enough for any row: rich fits a table to its content, so nothing is padded to this.
_UNWRAPPED = 10_000


def _show(err: Console, message: Message) -> None:
    # soft_wrap: one line each, however narrow the terminal (the terminal wraps, not rich).
    err.print(Text.assemble(("Error: ", "bold red"), (message.error, "red")), soft_wrap=True)
    if message.hint:
        err.print(Text(message.hint), soft_wrap=True)


class _ConsoleHandler(logging.Handler):
    """Log lines through the progress display's console, so they print above it, not
    through it; unwrapped, so a long URL stays on one line for grep."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(
            logging.Formatter("%(asctime)s.%(msecs)03d %(name)s %(message)s", "%H:%M:%S")
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(Text(self.format(record), style="dim"), soft_wrap=True)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _logging_to(err: Console, verbose: bool) -> Iterator[None]:
    """With ``-v``, the SDK's debug lines go to ``err`` for the command's length only: ``main``
    may run in a caller's process (tests, a notebook), whose logging it must leave as found."""
    if not verbose:
        yield
        return
    logger = logging.getLogger("imagetwin_async")
    handler, level = _ConsoleHandler(err), logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _execute(
    g: Globals,
    err: Console,
    *,
    emulator: bool,
    body: Callable[[ImagetwinClient], Awaitable[int]],
    interrupted: Callable[[], None] = lambda: None,
    unfinished: Callable[[], None] = lambda: None,
    request_timeout: float | None = None,
) -> int:
    """Run ``body`` with a client; map every expected failure to a message and exit code.

    ``interrupted`` runs on Ctrl-C and ``unfinished`` when an error stops the run: both print
    what the run had (every scan already submitted, billed, among it).
    """
    with _logging_to(err, g.verbose):
        connection = g.connection(emulator=emulator, request_timeout=request_timeout)

        async def main() -> int:
            async with open_client(connection) as client:
                return await body(client)

        try:
            return asyncio.run(main())
        except MissingKey:
            _show(err, missing_key())
            return ExitCode.USAGE
        except (ConfigurationError, InvalidArgument) as exc:  # nothing was sent
            _show(err, Message(str(exc)))
            return ExitCode.USAGE
        except ImagetwinError as exc:
            unfinished()
            _show(err, describe(exc, target=connection.target))
            return ExitCode.ERROR
        except KeyboardInterrupt:
            interrupted()
            return ExitCode.INTERRUPTED


def _estimator(
    client: ImagetwinClient, connection: Connection
) -> Callable[[BatchProgress, float], float | None]:
    def estimate(progress: BatchProgress, since_last_submission: float) -> float | None:
        model = client.scheduler.model
        typical = (
            model.quantile_after(0.0, 0.5) if model.ready else typical_scan_seconds(connection)
        )
        return estimate_seconds_left(
            progress,
            client.limits["scan"],
            typical_scan=typical,
            since_last_submission=since_last_submission,
        )

    return estimate


def _print_hints(err: Console, rows: Sequence[Row]) -> None:
    """One line of advice per kind of error in ``rows`` (a table of 401s says it once)."""
    seen: set[str] = set()
    for row in rows:
        hint = hint_for(row.error) if row.error is not None else None
        if hint and hint not in seen:
            seen.add(hint)
            err.print(Text(hint, style="yellow"), soft_wrap=True)


def _shared_fatal_error(rows: Sequence[Row]) -> ImagetwinError | None:
    """The error every row failed with, when it is about the connection, not the files."""
    errors = [row.error for row in rows]
    first = errors[0] if errors else None
    if not isinstance(first, AuthenticationError | TransportError):
        return None
    if isinstance(first, AmbiguousSubmission):
        return None  # per file: each may have started a billed scan
    if all(type(e) is type(first) for e in errors):
        return first
    return None


def _report_rows(
    out: Console,
    err: Console,
    rows: Sequence[Row],
    output: OutputFormat,
    *,
    elapsed: float | None = None,
    single: bool = False,
) -> int:
    """Print the rows (with links and hints) and return the exit code they mean.

    ``single``: the answer to one read (``result``): a running scan exits 4, and a finished
    one's result page and report are linked whatever it found.
    """
    running = single and rows[0].running
    code = ExitCode.RUNNING if running else exit_code(rows)
    print_rows(out, rows, output, elapsed=elapsed, code=code)
    if output == "table":
        if single and rows[0].result is not None:
            _print_result_links(out, rows[0].result)
        else:
            _print_links(out, rows)
    _print_hints(err, rows)
    return code


def _print_links(out: Console, rows: Sequence[Row]) -> None:
    flagged = [row for row in rows if row.status == "findings" and row.result is not None]
    if flagged:
        out.print(Text("\nReview the findings:", style="bold"))
    for row in flagged:
        assert row.result is not None
        link = Text.assemble(f"  {row.source}  ", (row.result.result_url, "blue underline"))
        out.print(link, soft_wrap=True)  # a URL broken over lines cannot be clicked


# ---- scan -----------------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, metavar="PATH...")
@click.option(
    "--samples",
    is_flag=True,
    help="Also scan the sample manuscripts shipped with imagetwin (try: --emulator --samples).",
)
@click.option(
    "--images",
    type=click.Choice(["per-dir", "single", "each"]),
    default="per-dir",
    show_default=True,
    help="How images become scans: one per directory, all together, or one each "
    "(groups are split at 25 images).",
)
@click.option(
    "--min-score",
    type=click.FloatRange(0.0, 0.9),
    default=None,
    help="Ignore findings below this confidence, 0.0-0.9 (server default 0.33).",
)
@click.option(
    "--exclude-identical-paper",
    is_flag=True,
    default=None,
    help="Leave out duplicates found in the same paper already in Imagetwin's database.",
)
@click.option("--callback-url", metavar="URL", help="Imagetwin POSTs here when each scan finishes.")
@click.option("--sandbox", is_flag=True, help="Use the free sandbox (predefined answers).")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the results, or only submit and print the scan ids.",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, writable=True, path_type=Path),
    help="Download each scan's PDF report into this directory (created if needed).",
)
@click.option(
    "--timeout",
    type=Duration(),
    default=None,
    help="Give up waiting after this long (90s, 30m, 2h); the scans go on.",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Record every step in this file; after a crash or Ctrl-C, the same command with the "
    "same journal resumes without paying for any scan twice.",
)
@_output_options
@_emulator_option
@click.pass_obj
def scan(
    g: Globals,
    *,
    paths: tuple[str, ...],
    samples: bool,
    images: Literal["per-dir", "single", "each"],
    min_score: float | None,
    exclude_identical_paper: bool | None,
    callback_url: str | None,
    sandbox: bool,
    wait: bool,
    report_dir: Path | None,
    timeout: float | None,
    journal: Path | None,
    fmt: str | None,
    as_json: bool,
    as_csv: bool,
    progress: bool | None,
    emulator: bool,
) -> int:
    """Scan documents (.pdf, .docx) and images: files, directories (recursive) or globs;
    - reads paths from stdin, one a line.

    Each document is one scan; images are grouped (--images). Prints a table, or --json /
    --csv for scripts, and exits 0 if all are clean, 1 if any has findings, 3 on errors.
    """
    output = _output_format(fmt, as_json, as_csv)
    if samples and not emulator and g.base_url.rstrip("/") == DEFAULT_BASE_URL and not sandbox:
        raise click.UsageError("--samples is for trying imagetwin: add --emulator (or --sandbox)")
    paths = tuple(expand(paths, sys.stdin, samples=samples))
    if not paths:
        raise click.UsageError("give PATH... to scan, - to read paths from stdin, or --samples")
    if not wait and (report_dir is not None or timeout is not None or journal is not None):
        raise click.UsageError("--report-dir, --timeout and --journal need --wait")
    out, err = _consoles(progress)
    try:
        found = discover(paths, images=images)
    except PathError as exc:
        _show(err, Message(str(exc)))
        return ExitCode.USAGE
    if g.verbose and found.skipped:
        err.print(Text(f"skipped {len(found.skipped)} files of other types", style="dim"))
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
    batch = BatchKwargs(
        min_score=min_score,
        callback_url=callback_url,
        exclude_identical_paper=exclude_identical_paper,
        sandbox=sandbox,
        timeout=timeout,
        journal=journal,
    )
    options = ScanOptions(batch, report_dir=report_dir)
    jobs = found.jobs
    state = RunState([job.label for job in jobs])
    started = time.monotonic()
    connection = g.connection(emulator=emulator)

    async def body(client: ImagetwinClient) -> int:
        display = BatchDisplay(
            err,
            estimate=_estimator(client, connection),
            total=len(jobs),
            description="Scanning" if wait else "Submitting",
            enabled=err.is_terminal if progress is None else progress,
        )
        state.display = display
        with display:
            runner = run_scan if wait else run_submit
            rows = await runner(client, jobs, options, state)
        fatal = _shared_fatal_error(rows)
        if fatal is not None and output == "table":
            # Every item failed the same way (a refused key, no network): one line says it.
            raise fatal
        return _report_rows(out, err, rows, output, elapsed=time.monotonic() - started)

    def interrupted() -> None:
        rows = state.rows_so_far()
        if rows:
            print_rows(out, rows, output, elapsed=time.monotonic() - started, interrupted=True)
        p = state.display.progress if state.display else BatchProgress(total=len(jobs))
        _show(
            err,
            Message(
                f"interrupted: {p.submitted} of {p.total} scans had been submitted "
                f"and {p.finished} had finished",
                (
                    f"Run the same command again (with --journal {journal}) to resume: results "
                    "already in the journal are kept and no scan is paid for twice."
                )
                if journal is not None
                else "Scans already submitted keep running on the server (and are billed): "
                "list them with `imagetwin overview`, fetch one with `imagetwin result "
                "SCAN_ID`. Running the same command again would submit every file again; "
                "use --journal to make a sweep resumable.",
            ),
        )

    def unfinished() -> None:
        # An error stopped the run: the scans it had started are billed, so list them.
        rows = state.rows_so_far()
        if any(row.scan_id for row in rows):
            print_rows(out, rows, output, elapsed=time.monotonic() - started)

    return _execute(
        g, err, emulator=emulator, body=body, interrupted=interrupted, unfinished=unfinished
    )


# ---- result, wait, report -------------------------------------------------------------------


@cli.command()
@click.argument("scan_id")
@_request_timeout_option("--timeout", "--request-timeout")
@_output_options
@_emulator_option
@click.pass_obj
def result(
    g: Globals,
    *,
    scan_id: str,
    request_timeout: float | None,
    fmt: str | None,
    as_json: bool,
    as_csv: bool,
    progress: bool | None,
    emulator: bool,
) -> int:
    """Read a scan's result once (exit 4 if it is still running)."""
    output = _output_format(fmt, as_json, as_csv)
    out, err = _consoles(progress)

    async def body(client: ImagetwinClient) -> int:
        row = await fetch_result(client, scan_id)
        return _report_rows(out, err, [row], output, single=True)

    return _execute(g, err, emulator=emulator, body=body, request_timeout=request_timeout)


def _print_result_links(out: Console, result: ScanResult) -> None:
    out.print(Text.assemble(("Result page: ", "bold"), (result.result_url, "blue")), soft_wrap=True)
    out.print(Text.assemble(("PDF report:  ", "bold"), (result.pdf_report, "blue")), soft_wrap=True)


@cli.command()
@click.argument("scan_ids", nargs=-1, required=True, metavar="SCAN_ID...|-")
@click.option("--timeout", type=Duration(), default=None, help="Give up after this long.")
@_request_timeout_option("--request-timeout")
@_output_options
@_emulator_option
@click.pass_obj
def wait(
    g: Globals,
    *,
    scan_ids: tuple[str, ...],
    timeout: float | None,
    request_timeout: float | None,
    fmt: str | None,
    as_json: bool,
    as_csv: bool,
    progress: bool | None,
    emulator: bool,
) -> int:
    """Wait for scans started earlier (scan --no-wait) and print their results; - reads the
    ids from stdin, one a line."""
    output = _output_format(fmt, as_json, as_csv)
    out, err = _consoles(progress)
    ids = list(dict.fromkeys(expand(scan_ids, sys.stdin)))  # each id once
    if not ids:
        raise click.UsageError("no scan ids (stdin was empty)")
    state = RunState(ids)
    connection = g.connection(emulator=emulator)
    started = time.monotonic()

    async def body(client: ImagetwinClient) -> int:
        display = BatchDisplay(
            err,
            estimate=_estimator(client, connection),
            total=len(ids),
            description="Waiting",
            enabled=err.is_terminal if progress is None else progress,
        )
        state.display = display
        with display:
            rows = await run_wait(client, ids, timeout, state)
        return _report_rows(out, err, rows, output, elapsed=time.monotonic() - started)

    # Every id is a running scan until its result says otherwise.
    state.started.update({i: Row(sid, scan_id=sid, running=True) for i, sid in enumerate(ids)})

    def interrupted() -> None:
        print_rows(out, state.rows_so_far(), output, interrupted=True)
        done = len(state.finished_rows())
        _show(err, Message(f"interrupted: {done} of {len(ids)} results were in"))

    return _execute(
        g,
        err,
        emulator=emulator,
        body=body,
        interrupted=interrupted,
        request_timeout=request_timeout,
    )


@cli.command()
@click.argument("scan_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="File (or directory) to write; default: SCAN_ID.pdf here.",
)
@click.option(
    "--timeout", type=Duration(), default=None, help="How long to wait if the scan still runs."
)
@_request_timeout_option("--request-timeout")
@_emulator_option
@click.pass_obj
def report(
    g: Globals,
    *,
    scan_id: str,
    output: Path | None,
    timeout: float | None,
    request_timeout: float | None,
    emulator: bool,
) -> int:
    """Download a scan's PDF report (waiting for the scan to finish if needed)."""
    out, err = _consoles(None)

    async def body(client: ImagetwinClient) -> int:
        answer = await fetch_result(client, scan_id)
        if answer.error is not None:
            raise answer.error
        found = answer.result
        if found is None:
            with err.status(f"Waiting for scan {scan_id[:12]}… to finish"):
                found = await client.wait_for_result(scan_id, timeout=timeout)
        path = await client.download_report(found, Path.cwd() if output is None else output)
        size = path.stat().st_size
        out.print(
            Text(f"Saved the report of {scan_id} to {path} ({size / 1024:.1f} KiB)"),
            soft_wrap=True,
        )
        return ExitCode.CLEAN

    return _execute(g, err, emulator=emulator, body=body, request_timeout=request_timeout)


# ---- overview -------------------------------------------------------------------------------


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@cli.command()
@click.option(
    "--start",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="First day (UTC, YYYY-MM-DD); default: 30 days before --end.",
)
@click.option(
    "--end", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day; default: today."
)
@_request_timeout_option("--timeout", "--request-timeout")
@_output_options
@_emulator_option
@click.pass_obj
def overview(
    g: Globals,
    *,
    start: dt.datetime | None,
    end: dt.datetime | None,
    request_timeout: float | None,
    fmt: str | None,
    as_json: bool,
    as_csv: bool,
    progress: bool | None,
    emulator: bool,
) -> int:
    """List the scans performed between two dates (both included)."""
    output = _output_format(fmt, as_json, as_csv)
    out, err = _consoles(progress)
    last = end.date() if end is not None else _utc_today()
    first = start.date() if start is not None else last - dt.timedelta(days=30)
    if first > last:
        raise click.UsageError(f"--start {first} is after --end {last}")

    async def body(client: ImagetwinClient) -> int:
        if output == "csv":
            text = await client.scan_overview(first, last, export_format="csv")
            out.file.write(text if text.endswith("\n") else text + "\n")
        else:
            print_overview(out, await client.scan_overview(first, last), output)
        return ExitCode.CLEAN

    return _execute(g, err, emulator=emulator, body=body, request_timeout=request_timeout)


# ---- emulator -------------------------------------------------------------------------------


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulator(args: tuple[str, ...]) -> int:
    """Serve a local emulator of the API (its options: imagetwin emulator --help)."""
    return serve_emulator(args)


cli.add_command(journal)
