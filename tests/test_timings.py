"""One time-scale setting: ``Timings``, ``speed=`` and the emulator's ``client_kwargs()``."""

from __future__ import annotations

import datetime as dt

import pytest

from imagetwin_async import ConfigurationError, FileContent, ImagetwinClient, RateLimit, Timings
from imagetwin_async._batch import BatchOptions, BatchRunner, BatchServices
from imagetwin_async._models import ScanOverview, ScanResult, ScanStarted
from imagetwin_async._protocol import Request
from imagetwin_async._session import BeforeSend
from imagetwin_async._uploads import Upload

from ._files import pdf_bytes

KEY = "sk-test"


def test_scaled_divides_every_wait_but_not_the_time_outs() -> None:
    base = Timings()
    fast = base.scaled(60)
    assert fast.scan_limit.requests == 20 and fast.scan_limit.per == pytest.approx(1.0)
    assert fast.result_limit.requests == 60 and fast.result_limit.per == pytest.approx(1.0)
    assert fast.scan_limit.margin == pytest.approx(base.scan_limit.margin / 60)
    assert fast.poll_interval == pytest.approx(5.0 / 60)
    assert fast.max_poll_interval == pytest.approx(1.0)
    assert fast.backoff_base == pytest.approx(0.5 / 60)
    assert fast.backoff_cap == pytest.approx(0.5)
    # Uploads and answers travel in real time, whatever the emulator's clock does.
    assert (fast.timeout, fast.connect_timeout) == (base.timeout, base.connect_timeout)
    assert base.scaled(1) == base


@pytest.mark.parametrize("speed", [0, -1, float("nan"), float("inf")])
def test_a_nonsense_speed_is_a_configuration_error(speed: float) -> None:
    with pytest.raises(ConfigurationError, match="speed"):
        Timings().scaled(speed)
    with pytest.raises(ConfigurationError, match="speed"):
        ImagetwinClient(KEY, speed=speed)


def test_the_client_takes_one_argument_for_the_speed() -> None:
    assert ImagetwinClient(KEY, speed=60).timings == Timings().scaled(60)
    assert ImagetwinClient(KEY).timings == Timings()
    given = ImagetwinClient(KEY, timings=Timings(poll_interval=2.0), speed=2).timings
    assert given.poll_interval == 1.0 and given.max_poll_interval == 30.0


def test_a_keyword_given_wins_over_the_scaled_timings_as_real_seconds() -> None:
    client = ImagetwinClient(
        KEY, speed=60, max_poll_interval=7.0, scan_limit=RateLimit(5, per=2.0), timeout=None
    )
    t = client.timings
    assert t.max_poll_interval == 7.0 and t.poll_interval == pytest.approx(5.0 / 60)
    assert t.scan_limit == RateLimit(5, per=2.0)
    assert t.result_limit.per == pytest.approx(1.0)
    assert t.timeout is None and t.connect_timeout == 30.0
    assert client.scheduler.max_poll_interval == 7.0


@pytest.mark.parametrize(
    ("option", "value"),
    [("poll_interval", 0), ("max_poll_interval", -1.0), ("timeout", 0.0)],
)
def test_bad_timings_are_configuration_errors(option: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=option):
        Timings(**{option: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=option):
        ImagetwinClient(KEY, **{option: value})  # type: ignore[arg-type]


async def test_the_batch_runner_needs_only_its_services_not_a_client() -> None:
    # The runner is wired by the facade: a stand-in for each collaborator is enough.
    calls: list[str] = []

    async def start_scan(
        request: Request, upload: Upload, *, before_send: BeforeSend
    ) -> ScanStarted:
        await before_send()
        calls.append(f"start {request.path}")
        upload.close()
        return ScanStarted("s1", "ok")

    async def wait(scan_id: str) -> ScanResult:
        calls.append(f"wait {scan_id}")
        return ScanResult(scan_id, 0, 0, 0, 0, "https://r/x.pdf", "https://r/x")

    async def overview(start: dt.datetime, end: dt.datetime) -> ScanOverview:
        raise AssertionError("no journal, nothing to settle")

    services = BatchServices(
        start_scan=start_scan, wait=wait, overview=overview, request_deadline=300.0
    )
    item = FileContent("a.pdf", pdf_bytes())
    [outcome] = await BatchRunner(services, [item], BatchOptions()).run()
    assert outcome.ok and outcome.scan_id == "s1"
    assert calls == ["start scan", "wait s1"]
