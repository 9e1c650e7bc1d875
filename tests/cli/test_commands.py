"""``imagetwin`` end to end: a subprocess against a sped-up emulator, as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pypdf import PdfWriter

from imagetwin_async import ImagetwinClient, TransportError, _spec
from imagetwin_async.emulator import Outcome, ThreadedEmulator

from .conftest import KEY, REPO, SAMPLES, SPEED, Cli, Main, clean_env, run_cli

CLEAN = str(SAMPLES / "cell-counts.pdf")  # the emulator finds nothing in it
FLAGGED = str(SAMPLES / "western-blot-study.pdf")  # four findings, highest 0.97


def scans(stdout: str) -> dict[str, dict[str, object]]:
    """``--json`` output, by file name (``dir/`` for a group of images)."""
    found = {}
    for scan in json.loads(stdout)["scans"]:
        files = [Path(f) for f in scan["files"]]
        found[files[0].name if len(files) == 1 else f"{files[0].parent.name}/"] = scan
    return found


def test_scan_samples_json_and_reports(
    cli: Cli, emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    out = cli("scan", "--samples", "--json", "--report-dir", str(reports))

    assert out.code == 1, out.stderr  # findings, no errors
    document = json.loads(out.stdout)
    assert document["summary"] == {
        "total": 4,
        "clean": 2,
        "with_findings": 2,
        "errors": 0,
        "not_finished": 0,
        "exit_code": 1,
        "interrupted": False,
    }
    by_name = scans(out.stdout)
    assert by_name["cell-counts.pdf"]["status"] == "clean"
    flagged = by_name["western-blot-study.pdf"]
    assert flagged["status"] == "findings"
    assert flagged["highest_score"] == 0.97
    assert by_name["microscopy-report.pdf"]["highest_score"] == 0.38
    images = by_name["figures/"]  # the three PNGs of one directory: one scan
    assert len(images["files"]) == 3  # type: ignore[arg-type]
    assert str(images["source"]).endswith("(3 images)")
    # One billed scan per job, and one PDF report per result.
    assert emulator.emulator.counters.scans_billed == 4
    files = sorted(reports.iterdir())
    assert len(files) == 4
    assert all(f.read_bytes().startswith(b"%PDF") for f in files)
    assert {s["report_file"] for s in by_name.values()} == {str(f) for f in files}
    assert out.stderr == ""  # no terminal on stderr: no progress display


def test_exit_code_clean_with_csv(cli: Cli) -> None:
    weak = str(SAMPLES / "microscopy-report.pdf")  # two findings, highest 0.38
    out = cli("scan", CLEAN, weak, "--min-score", "0.5", "--csv")

    assert out.code == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(Path(r["source"]).name, r["status"], r["min_score"]) for r in rows] == [
        ("cell-counts.pdf", "clean", "0.5"),
        ("microscopy-report.pdf", "clean", "0.5"),
    ]
    assert all(len(r["scan_id"]) == 64 for r in rows)


def test_exit_code_findings_with_table(cli: Cli) -> None:
    out = cli("scan", CLEAN, FLAGGED)

    assert out.code == 1, out.stderr
    assert "4 findings" in out.stdout
    assert "2 scans: 1 clean, 1 with findings, 0 failed" in out.stdout
    assert "Review the findings:" in out.stdout


def test_exit_code_errors_win_over_findings(cli: Cli, emulator: ThreadedEmulator) -> None:
    emulator.call(lambda e: e.script(Outcome.failed(), file_name="cell-counts.pdf"))
    out = cli("scan", CLEAN, FLAGGED, "--json")

    assert out.code == 3, out.stderr
    by_name = scans(out.stdout)
    assert by_name["western-blot-study.pdf"]["status"] == "findings"
    assert by_name["cell-counts.pdf"]["error"] == {
        "type": "ScanFailed",
        "message": "GET /result/{scanId}: the scan failed on the server (500): "
        "A server error occurred during processing the provided data.",
    }


def test_missing_key_says_how_to_set_it(main_in_process: Main) -> None:
    out = main_in_process("scan", CLEAN)

    assert out.code == 2
    assert "no API key" in out.stderr
    assert "IMAGETWIN_API_KEY" in out.stderr
    assert "--emulator" in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_path(main_in_process: Main) -> None:
    out = main_in_process("scan", "--emulator", CLEAN, "no/such/paper.pdf")

    assert out.code == 2
    assert "no such file or directory: no/such/paper.pdf" in out.stderr
    assert out.stdout == ""


def test_glob_matching_nothing(main_in_process: Main) -> None:
    out = main_in_process("scan", "--emulator", "imagetwin_async/samples/*.docx")

    assert out.code == 2
    assert "no files match imagetwin_async/samples/*.docx" in out.stderr


def test_rejected_upload_names_file_and_limit(
    cli: Cli, emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a paper")
    long_paper = tmp_path / "thesis.pdf"
    writer = PdfWriter()
    for _ in range(_spec.MAX_DOCUMENT_PAGES):
        writer.add_blank_page(width=72, height=72)
    with long_paper.open("wb") as f:
        writer.write(f)

    out = cli("scan", str(notes), str(long_paper), CLEAN, "--json")

    assert out.code == 3
    by_name = scans(out.stdout)
    assert by_name["cell-counts.pdf"]["status"] == "clean"  # the others still ran
    for name, limit in (("notes.txt", ".txt files cannot be scanned"), ("thesis.pdf", "50")):
        error = by_name[name]["error"]
        assert isinstance(error, dict)
        assert error["type"] == "InvalidUpload"
        assert name in error["message"]
        assert limit in error["message"]
    assert emulator.emulator.counters.scans_billed == 1


def test_refused_key(emulator: ThreadedEmulator, main_in_process: Main) -> None:
    out = main_in_process(
        "--base-url", emulator.url, "--api-key", "sk-wrong", "scan", CLEAN, FLAGGED
    )

    assert out.code == 3
    assert "the API key was refused (401)" in out.stderr
    assert "app.imagetwin.ai/account" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""  # one line says it, not a table of identical errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_network_failure(main_in_process: Main) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = main_in_process("--base-url", url, "--api-key", KEY, "--speed", "60", "scan", CLEAN)

    assert out.code == 3
    assert f"could not reach {url}" in out.stderr
    assert "--base-url" in out.stderr


def test_verbose_logs_requests_but_never_the_key(cli: Cli) -> None:
    out = cli("-v", "scan", CLEAN, "--json")

    assert out.code == 0
    assert "POST /scan -> 200" in out.stderr
    assert KEY not in out.stderr + out.stdout


def test_verbose_in_process_leaves_the_callers_logging_as_it_found_it(
    main_in_process: Main, emulator: ThreadedEmulator
) -> None:
    """``imagetwin_async.cli.main`` run inside a caller's process (a notebook, a test): ``-v``
    logs for that command only, and the SDK's logger is handed back untouched."""
    sdk = logging.getLogger("imagetwin_async")
    handlers, level = list(sdk.handlers), sdk.level
    connect = ("--base-url", emulator.url, "--api-key", KEY, "--speed", str(SPEED))
    out = main_in_process(*connect, "-v", "scan", CLEAN, "--json")
    assert out.code == 0, out.stderr
    assert "POST /scan -> 200" in out.stderr
    assert (sdk.handlers, sdk.level) == (handlers, level)


def test_no_wait_then_wait_and_result(cli: Cli, emulator: ThreadedEmulator) -> None:
    submitted = cli("scan", CLEAN, FLAGGED, "--no-wait", "--json")
    assert submitted.code == 0, submitted.stderr
    ids = {name: s["scan_id"] for name, s in scans(submitted.stdout).items()}
    assert {s["status"] for s in scans(submitted.stdout).values()} == {"running"}

    waited = cli("wait", *map(str, ids.values()), "--json")
    assert waited.code == 1
    assert [s["status"] for s in json.loads(waited.stdout)["scans"]] == ["clean", "findings"]

    result = cli("result", str(ids["western-blot-study.pdf"]))
    assert result.code == 1
    assert "4 findings" in result.stdout
    assert "PDF report:" in result.stdout
    assert emulator.emulator.counters.scans_billed == 2


def test_result_of_running_and_failed_scans(
    cli: Cli, emulator: ThreadedEmulator, main_in_process: Main
) -> None:
    connect = ("--base-url", emulator.url, "--api-key", KEY)
    running = main_in_process(*connect, "result", _spec.SANDBOX_RUNNING_ID)
    assert running.code == 4
    assert "running" in running.stdout
    failed = cli("result", _spec.SANDBOX_FAILED_ID, "--json")
    assert failed.code == 3
    assert json.loads(failed.stdout)["scans"][0]["error"]["type"] == "ScanFailed"


def test_report_download(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "report.pdf"
    out = cli("report", _spec.SANDBOX_FINISHED_ID, "-o", str(target))

    assert out.code == 0, out.stderr
    assert target.read_bytes().startswith(b"%PDF")
    assert str(target) in out.stdout


def test_overview_csv_and_json(cli: Cli, emulator: ThreadedEmulator, main_in_process: Main) -> None:
    when = datetime(2025, 4, 10, 13, 54, 5, tzinfo=UTC)
    uuid = "1625b21d-0492-44b5-83bb-76161ab116eb"
    emulator.call(lambda e: e.add_overview_entry(uuid, when, api_scan=True))
    span = ("--start", "2025-04-01", "--end", "2025-04-30")

    as_csv = cli("overview", *span, "--format", "csv")
    assert as_csv.code == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["scanId"] for r in rows] == [uuid]

    connect = ("--base-url", emulator.url, "--api-key", KEY)
    as_json = main_in_process(*connect, "overview", *span, "--json")
    assert json.loads(as_json.stdout)["scans"][0]["scan_date"] == "2025-04-10T13:54:05+00:00"


def test_progress_display_on_a_terminal(emulator: ThreadedEmulator) -> None:
    """With stderr on a pseudo-terminal the display turns itself on."""
    import pty  # noqa: PLC0415 - POSIX only

    master, slave = pty.openpty()
    args = ["--base-url", emulator.url, "--api-key", KEY, "--speed", "60", "scan", CLEAN, "--json"]
    with subprocess.Popen(
        [sys.executable, "-m", "imagetwin_async.cli", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=clean_env(TERM="xterm-256color"),
        cwd=REPO,
    ) as process:
        os.close(slave)
        assert process.stdout is not None
        stdout = process.stdout.read()
        process.wait(timeout=60)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert process.returncode == 0
    assert json.loads(stdout)["summary"]["total"] == 1  # stdout is only the JSON
    for counter in ("Scanning", "1/1", "submitted 1", "running 0", "done 1", "failed 0"):
        assert counter in screen


def test_interrupt_says_what_was_submitted(emulator: ThreadedEmulator) -> None:
    emulator.call(lambda e: e.script(Outcome.never(), file_name="western-blot-study.pdf"))
    connect = ["--base-url", emulator.url, "--api-key", KEY, "--speed", "60"]
    args = [*connect, "scan", CLEAN, FLAGGED, "--json"]
    with subprocess.Popen(
        [sys.executable, "-m", "imagetwin_async.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=REPO,
    ) as process:
        deadline = time.monotonic() + 30
        # Wait until the clean paper's result is in and the other scan is running.
        while time.monotonic() < deadline:
            done = [s for s in emulator.emulator.scans.values() if s.ends_at < 1e300]
            if emulator.emulator.counters.scans_billed == 2 and done:
                break
            time.sleep(0.05)
        time.sleep(1.0)  # the clean scan's 0.5 s, and its poll
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert "interrupted: 2 of 2 scans had been submitted and 1 had finished" in stderr
    assert "imagetwin overview" in stderr
    assert "Traceback" not in stderr
    partial = json.loads(stdout)  # what did come back is shown ...
    assert partial["summary"]["interrupted"] is True
    assert partial["summary"]["exit_code"] == 130
    by_name = {Path(s["source"]).name: s for s in partial["scans"]}
    assert by_name["cell-counts.pdf"]["status"] == "clean"
    # ... and the billed scan still running is listed with its id: nothing paid for is lost.
    running = by_name["western-blot-study.pdf"]
    assert running["status"] == "running"
    assert running["scan_id"] in emulator.emulator.scans
    assert partial["summary"]["total"] == 2
    assert partial["summary"]["not_finished"] == 1


def test_emulator_flag_needs_no_key() -> None:
    out = run_cli("scan", "--emulator", "--samples", "--json")

    assert out.code == 1, out.stderr
    assert json.loads(out.stdout)["summary"]["total"] == 4


def test_emulator_command_serves_the_api() -> None:
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-m", "imagetwin_async.cli", "emulator", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    ) as server:
        try:
            assert server.stdout is not None
            assert "Imagetwin emulator at" in server.stdout.readline()
            url = f"http://127.0.0.1:{port}/v1"
            out = run_cli(
                "--base-url",
                url,
                "--api-key",
                "test-key",
                "result",
                "--json",
                _spec.SANDBOX_FINISHED_ID,
            )
            assert out.code == 1, out.stderr  # the vendor's example result has duplicates
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=30)
    assert server.returncode == 0


def test_interrupted_sweep_resumes_from_its_journal(
    emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    emulator.call(lambda e: e.script(Outcome.never(), file_name="western-blot-study.pdf"))
    journal = tmp_path / "sweep.journal"
    connect = ["--base-url", emulator.url, "--api-key", KEY, "--speed", "60"]
    args = [*connect, "scan", CLEAN, FLAGGED, "--json", "--journal", str(journal)]
    command = [sys.executable, "-m", "imagetwin_async.cli", *args]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=REPO,
    ) as process:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and emulator.emulator.counters.scans_billed < 2:
            time.sleep(0.05)
        time.sleep(1.0)  # the clean scan's result comes in; the other one never ends
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert f"with --journal {journal}) to resume" in stderr

    (stuck,) = [
        s.scan_id
        for s in emulator.emulator.scans.values()
        if s.files[0].name == "western-blot-study.pdf"
    ]
    emulator.call(lambda e: e.finish_scan(stuck))
    again = subprocess.run(
        command, check=False, capture_output=True, text=True, env=clean_env(), cwd=REPO, timeout=60
    )
    assert again.returncode == 1, again.stderr  # findings, nothing failed
    assert emulator.emulator.counters.scans_billed == 2  # nothing was paid for twice
    assert {s["scan_id"] for s in json.loads(again.stdout)["scans"]} >= {stuck}


def test_wait_keeps_every_result_when_one_id_fails(
    emulator: ThreadedEmulator, main_in_process: Main, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = "a" * 64
    real = ImagetwinClient.get_result

    async def get_result(self: ImagetwinClient, scan_id: str, *, block: bool = True) -> object:
        if scan_id == flaky:  # a read whose retries were all spent
            raise TransportError("GET /result: gave up after 6 attempts", endpoint="GET /result")
        return await real(self, scan_id, block=block)

    monkeypatch.setattr(ImagetwinClient, "get_result", get_result)
    done = _spec.SANDBOX_FINISHED_ID
    out = main_in_process(
        "--base-url", emulator.url, "--api-key", KEY, "--speed", "60",
        "wait", done, flaky, "--json", "--timeout", "2",
    )  # fmt: skip
    assert out.code == 3, out.stderr
    by_id = {s["scan_id"]: s for s in json.loads(out.stdout)["scans"]}
    assert by_id[done]["status"] == "findings"
    assert by_id[flaky]["status"] == "error"


def test_a_second_run_starts_from_the_durations_the_first_one_learned(
    emulator: ThreadedEmulator, tmp_path: Path
) -> None:
    # A CLI run is short and starts cold; the next one must not: the scan durations it saw
    # are kept in a small cache file per service, which a damaged copy cannot break.
    cache = tmp_path / "cache"
    connect = ("--base-url", emulator.url, "--api-key", KEY, "--speed", str(SPEED))
    env = clean_env(IMAGETWIN_CACHE_DIR=str(cache))
    first = run_cli(*connect, "scan", "--samples", "--json", env=env)
    assert first.code == 1, first.stderr
    (saved,) = cache.glob("durations-*.json")
    state = json.loads(saved.read_text())
    assert len(state["observations"]) == 4
    assert KEY not in saved.read_text()

    saved.write_text("{ damaged")
    second = run_cli(*connect, "scan", "--samples", "--json", env=env)
    assert second.code == 1, second.stderr
    assert len(json.loads(saved.read_text())["observations"]) == 4  # replaced, not appended


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (("result", _spec.SANDBOX_RUNNING_ID), "--timeout"),
        (("result", _spec.SANDBOX_RUNNING_ID), "--request-timeout"),
        (("wait", _spec.SANDBOX_FINISHED_ID), "--request-timeout"),
        (("overview", "--start", "2025-04-01", "--end", "2025-04-30"), "--timeout"),
    ],
)
def test_a_request_timeout_ends_a_hung_read_and_the_retry_answers(
    emulator: ThreadedEmulator, main_in_process: Main, command: tuple[str, ...], option: str
) -> None:
    """A gateway that holds one answer ten (real) seconds: the command's request time-out
    gives up on it, the read is retried and answered, and the command ends in a few seconds
    (the default time-out, five minutes, would wait the ten seconds out)."""
    endpoint = "scan-overview" if command[0] == "overview" else "result"
    emulator.call(lambda e: e.inject_fault("delay", endpoint=endpoint, delay=10 * SPEED))
    connect = ("--base-url", emulator.url, "--api-key", KEY, "--speed", str(SPEED))
    started = time.monotonic()
    out = main_in_process(*connect, *command, option, "0.5", "--json")
    elapsed = time.monotonic() - started
    # Answered, not an error (3): clean, findings (the sandbox's finished scan has some) or
    # still running (the sandbox's forever-running scan).
    assert out.code in (0, 1, 4), out.stderr
    assert elapsed < 6.0, f"{elapsed:.1f}s: the request time-out did not end the hung read"


def test_a_request_timeout_must_be_a_duration(main_in_process: Main) -> None:
    out = main_in_process("--api-key", KEY, "result", _spec.SANDBOX_RUNNING_ID, "--timeout", "0")
    assert out.code == 2
    assert "duration" in out.stderr
