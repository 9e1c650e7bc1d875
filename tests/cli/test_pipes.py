"""``imagetwin`` in a pipeline: as a script sees it, through pipes, never a terminal.

The user here is a shell script: ``find ... | imagetwin scan - | grep``, ``jq ... | imagetwin
wait -``, and a Ctrl-C in the middle of a billed sweep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from imagetwin_async.emulator import Outcome, ThreadedEmulator

from .conftest import KEY, REPO, SAMPLES, Cli, clean_env, run_cli

CLEAN = SAMPLES / "cell-counts.pdf"
FLAGGED = SAMPLES / "western-blot-study.pdf"


def test_scan_dash_reads_paths_from_stdin(cli: Cli) -> None:
    out = cli("scan", "-", "--json", stdin=f"{CLEAN}\n\n  {FLAGGED}  \n")
    assert out.code == 1, out.stderr  # the flagged paper has findings
    names = sorted(Path(s["source"]).name for s in json.loads(out.stdout)["scans"])
    assert names == ["cell-counts.pdf", "western-blot-study.pdf"]


def test_wait_dash_reads_ids_one_a_line(cli: Cli) -> None:
    submitted = json.loads(cli("scan", str(CLEAN), str(FLAGGED), "--no-wait", "--json").stdout)
    ids = [s["scan_id"] for s in submitted["scans"]]
    out = cli("wait", "-", "--json", stdin="\n".join(ids) + "\n")
    assert out.code == 1, out.stderr
    assert sorted(s["scan_id"] for s in json.loads(out.stdout)["scans"]) == sorted(ids)


def test_wait_dash_with_nothing_on_stdin_is_a_usage_error(cli: Cli) -> None:
    out = cli("wait", "-", stdin="")
    assert out.code == 2
    assert "no scan ids" in out.stderr


def test_piped_table_rows_are_never_wrapped(cli: Cli) -> None:
    """COLUMNS=40 would cut ids over lines; piped, each row is one line with the whole id."""
    long_name = SAMPLES / "figures"  # a group of three images: a long label
    out = cli("scan", str(FLAGGED), str(long_name), env=clean_env(COLUMNS="40"))
    assert out.code == 1, out.stderr
    rows = [line for line in out.stdout.splitlines() if "western-blot-study.pdf" in line]
    # `| grep western-blot-study.pdf` finds the whole table row (and the review link).
    table_row, link = rows
    assert any(len(word) == 64 for word in table_row.split()), table_row  # the id, not cut
    assert "/result/" in link
    assert max(len(line) for line in out.stdout.splitlines()) > 40  # COLUMNS was not obeyed


def test_result_of_a_running_scan_says_4_in_json_and_exits_4(
    cli: Cli, emulator: ThreadedEmulator
) -> None:
    emulator.call(lambda e: e.script(Outcome.never(), file_name="cell-counts.pdf"))
    started = json.loads(cli("scan", str(CLEAN), "--no-wait", "--json").stdout)
    scan_id = started["scans"][0]["scan_id"]
    out = cli("result", scan_id, "--json")
    assert out.code == 4, out.stderr
    assert json.loads(out.stdout)["summary"]["exit_code"] == 4


def test_ctrl_c_before_any_result_still_lists_every_billed_scan(
    emulator: ThreadedEmulator,
) -> None:
    """Nothing finished yet: the scans are billed all the same, so their ids must be written."""
    emulator.call(lambda e: e.script(Outcome.never()))
    connect = ["--base-url", emulator.url, "--api-key", KEY, "--speed", "60"]
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imagetwin_async.cli",
            *connect,
            "scan",
            str(CLEAN),
            str(FLAGGED),
            "--json",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=REPO,
    ) as process:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and emulator.emulator.counters.scans_billed < 2:
            time.sleep(0.05)
        time.sleep(0.3)  # the second answer reaches the client
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    report = json.loads(stdout)
    assert report["summary"]["total"] == 2
    assert report["summary"]["not_finished"] == 2
    assert {s["status"] for s in report["scans"]} == {"running"}
    assert {s["scan_id"] for s in report["scans"]} == set(emulator.emulator.scans)


def test_the_emulators_hint_is_one_line_when_piped() -> None:
    """A command to copy: never broken over lines, however narrow COLUMNS says the screen is.

    (The address cannot be bound, so the emulator prints its hint and exits at once.)
    """
    out = run_cli("emulator", "--port", "1", "--host", "256.0.0.1", env=clean_env(COLUMNS="30"))
    first = out.stderr.splitlines()[0]
    assert first.startswith("Use it with: imagetwin --base-url http://256.0.0.1:1/v1 --api-key ")
    assert first.endswith(" scan PATH...")
    assert out.code == 3
