"""Per-call options and client views (``with_options``), as openai's SDK has them.

What a service relies on: a view changes time-outs and retries and nothing else; it shares
the one rate budget of the key (two views hammering the API still get no 429), the session
(also one the caller passed in) and the poll scheduler; closing a view closes nothing of the
client's, and closing the client ends its views with a clear error. A call's own keyword wins
over the view's, the view's over the client's.

The adversaries: a gateway that stalls or answers 503 to everything, a server that counts
requests as the vendor's does (the emulator), and a scan POST lost in flight (money).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from imagetwin_async import (
    AmbiguousSubmission,
    ClientClosed,
    ConfigurationError,
    ImagetwinClient,
    InvalidArgument,
    RateLimit,
    RateLimited,
    ScanPending,
    ServiceUnavailable,
    Timings,
    TransportError,
    _spec,
)
from imagetwin_async.emulator import Emulator

KEY = "sk-views-test-5678"
SCAN_ID = "b" * 64
STALL_ID = "f" * 64
# Retries without waiting for real: back-off of a millisecond.
FAST = Timings(backoff_base=0.001, backoff_cap=0.002)


@attrs.define
class Gateway:
    """A gateway in front of the API: 503 to every read of ``SCAN_ID`` (no Retry-After),
    a minute's silence for ``STALL_ID``, and whatever ``scan_status`` says to scan POSTs."""

    url: str = ""
    reads: int = 0
    posts: int = 0
    scan_status: int = 503
    scan_headers: dict[str, str] = attrs.Factory(dict)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    state = Gateway()

    async def result(request: web.Request) -> web.Response:
        state.reads += 1
        if request.match_info["scan_id"] == STALL_ID:
            await asyncio.sleep(60)
        if request.match_info["scan_id"] == SCAN_ID:
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"status": "running"}, status=202)

    async def scan(request: web.Request) -> web.Response:
        state.posts += 1
        await request.read()
        return web.json_response(
            {"error": "gateway"}, status=state.scan_status, headers=state.scan_headers
        )

    app = web.Application()
    app.router.add_get("/v1/result/{scan_id}", result)
    app.router.add_post("/v1/scan", scan)
    async with TestServer(app, host="127.0.0.1") as srv:
        state.url = str(srv.make_url("/v1"))
        yield state


async def attempts(gateway: Gateway, client: ImagetwinClient, **options: int) -> int:
    """How many requests one failing read sent (its first try and its retries)."""
    before = gateway.reads
    with pytest.raises(ServiceUnavailable):
        await client.get_result(SCAN_ID, **options)
    return gateway.reads - before


# ---- precedence: call > view > client -------------------------------------------------------


async def test_retries_come_from_the_call_then_the_view_then_the_client(
    gateway: Gateway,
) -> None:
    async with ImagetwinClient(KEY, base_url=gateway.url, timings=FAST, max_retries=3) as client:
        view = client.with_options(max_retries=1)
        assert await attempts(gateway, client) == 4
        assert await attempts(gateway, view) == 2
        assert await attempts(gateway, view, max_retries=0) == 1
        assert await attempts(gateway, client, max_retries=2) == 3
        # A view of a view starts from the view's options; the client is untouched.
        assert await attempts(gateway, view.with_options(timeout=30)) == 2
        assert await attempts(gateway, client) == 4


async def timed(client: ImagetwinClient, **options: float) -> float:
    started = time.monotonic()
    with pytest.raises(TransportError):
        await client.get_result(STALL_ID, max_retries=0, **options)
    return time.monotonic() - started


async def test_time_outs_come_from_the_call_then_the_view_then_the_client(
    gateway: Gateway,
) -> None:
    """A hung gateway: the time-out in force ends the read, whichever level set it."""
    async with ImagetwinClient(KEY, base_url=gateway.url, timeout=120) as client:
        quick = client.with_options(timeout=0.3)
        slow = client.with_options(timeout=120)
        assert quick.timings.timeout == 0.3
        assert client.timings.timeout == 120
        assert await timed(quick) < 3.0  # view over client
        assert await timed(slow, timeout=0.3) < 3.0  # call over view
        # ... and the client and the slow view still answer what is not stalled.
        assert isinstance(await slow.get_result("c" * 64), ScanPending)


async def test_a_views_time_out_applies_on_the_callers_own_session(gateway: Gateway) -> None:
    async with (
        aiohttp.ClientSession() as session,  # its own default time-out is 5 minutes
        ImagetwinClient(KEY, base_url=gateway.url, session=session, timeout=120) as client,
    ):
        async with client.with_options(timeout=0.3) as view:
            assert await timed(view) < 3.0
        assert not session.closed  # the view's exit closed nothing
        await client.close()
        assert not session.closed  # nor the client's: the session is the caller's


# ---- money: max_retries never resends what may have started a scan -------------------------


async def test_max_retries_on_a_scan_resends_only_what_provably_started_nothing(
    gateway: Gateway, pdf: Path
) -> None:
    async with ImagetwinClient(KEY, base_url=gateway.url, timings=FAST) as client:
        # A 502 to a POST may hide a started scan: one attempt, whatever max_retries says.
        gateway.scan_status = 502
        with pytest.raises(AmbiguousSubmission):
            await client.with_options(max_retries=5).scan(pdf, max_retries=9)
        assert gateway.posts == 1
        # A 503 with Retry-After is a refusal: resent, as often as the call allows.
        gateway.posts = 0
        gateway.scan_status, gateway.scan_headers = 503, {"Retry-After": "0"}
        with pytest.raises(ServiceUnavailable):
            await client.with_options(max_retries=5).scan(pdf, max_retries=2)
        assert gateway.posts == 3


# ---- one rate budget however many views -------------------------------------------------------


async def hammer(clients: list[ImagetwinClient], reads: int) -> list[BaseException]:
    """``reads`` reads from each client at once; the errors they ended with."""

    async def read(client: ImagetwinClient) -> None:
        assert isinstance(await client.get_result(_spec.SANDBOX_RUNNING_ID), ScanPending)

    done = await asyncio.gather(
        *(read(client) for client in clients for _ in range(reads)), return_exceptions=True
    )
    return [e for e in done if isinstance(e, BaseException)]


async def test_two_views_hammering_the_api_share_one_budget_and_get_no_429() -> None:
    """90 reads from each of two views against a sliding 60-a-minute window: none refused.

    The counterfactual, two clients on the same key (a limiter each), is refused: the test
    would see a view that built limiters of its own.
    """
    async with (
        Emulator(speed=60) as emu,
        ImagetwinClient(**emu.client_kwargs(), max_retries=0) as client,
    ):
        quick = client.with_options(timeout=30, max_retries=0)
        patient = client.with_options(timeout=60, max_retries=0)
        assert quick.limits == client.limits == patient.limits
        assert quick.scheduler is client.scheduler is patient.scheduler
        assert await hammer([quick, patient], 90) == []
        assert emu.counters.rate_limited == {}
        assert len(emu.requests) == 180

        emu.reset()
        # Two fresh clients (the first one's window is still spent, so on a slow machine its
        # reads could trail the other's past the server's window): each lets 60 go at once.
        async with (
            ImagetwinClient(**emu.client_kwargs(), max_retries=0) as one,
            ImagetwinClient(**emu.client_kwargs(), max_retries=0) as other,
        ):
            errors = await hammer([one, other], 60)
        assert errors
        assert all(isinstance(e, RateLimited) for e in errors), errors
        assert sum(emu.counters.rate_limited.values()) == len(errors)


async def test_a_view_shares_the_clients_poll_scheduler_and_batches_run_on_it(
    pdf: Path,
) -> None:
    async with (
        Emulator(speed=600, processing_time=5.0) as emu,
        ImagetwinClient(**emu.client_kwargs()) as client,
    ):
        view = client.with_options(timeout=30, max_retries=1)
        (outcome,) = await view.submit_and_wait([pdf])
        assert outcome.ok
        started = await view.scan(pdf)
        result = await view.wait_for_result(started.scan_id)
        assert result.scan_id == started.scan_id
        assert client.scheduler.stats.reads >= 2


# ---- closing ------------------------------------------------------------------------------


async def test_closing_a_view_closes_nothing_of_the_clients(gateway: Gateway) -> None:
    async with ImagetwinClient(KEY, base_url=gateway.url) as client:
        session = client._transport.session
        async with client.with_options(timeout=5) as view:
            assert isinstance(await view.get_result("c" * 64), ScanPending)
        assert view.closed
        assert not session.closed
        assert client._transport.session is session  # the same connection pool, still open
        assert isinstance(await client.get_result("c" * 64), ScanPending)


async def test_a_closed_view_refuses_calls_until_entered_again(gateway: Gateway, pdf: Path) -> None:
    async with ImagetwinClient(KEY, base_url=gateway.url) as client:
        view = client.with_options(timeout=5)
        await view.close()
        before = gateway.reads, gateway.posts
        with pytest.raises(ClientClosed, match="view"):
            await view.get_result("c" * 64)
        with pytest.raises(ClientClosed):
            await view.scan(pdf)
        with pytest.raises(ClientClosed):
            await view.submit_and_wait([pdf])
        with pytest.raises(ClientClosed):
            await view.wait_for_result("c" * 64)
        assert (gateway.reads, gateway.posts) == before  # nothing was sent
        async with view:
            assert isinstance(await view.get_result("c" * 64), ScanPending)


async def test_closing_the_client_ends_its_views_with_a_clear_error(gateway: Gateway) -> None:
    client = ImagetwinClient(KEY, base_url=gateway.url)
    async with client:
        view = client.with_options(timeout=5)
        assert isinstance(await view.get_result("c" * 64), ScanPending)
    with pytest.raises(ClientClosed, match="with_options") as caught:
        await view.get_result("c" * 64)
    assert isinstance(caught.value, RuntimeError)
    # The client itself reopens; its old views stay ended, new ones work.
    async with client:
        assert isinstance(await client.get_result("c" * 64), ScanPending)
        with pytest.raises(ClientClosed):
            await view.get_result("c" * 64)
        with pytest.raises(ClientClosed):
            async with view:
                pass
        with pytest.raises(ClientClosed):
            view.with_options(timeout=1)
        fresh = client.with_options(timeout=5)
        assert isinstance(await fresh.get_result("c" * 64), ScanPending)


async def test_a_view_in_flight_when_the_client_closes_opens_no_session_of_its_own(
    gateway: Gateway,
) -> None:
    """The last line of defence, below the client's checks: a view's transport used after
    its owner closed refuses rather than making a session nobody would close."""
    client = ImagetwinClient(KEY, base_url=gateway.url)
    view = client.with_options(timeout=5)
    transport = view._transport
    await client.close()
    with pytest.raises(ClientClosed):
        _ = transport.session


# ---- options are checked; the key never shows ----------------------------------------------


def test_bad_view_options_are_refused_at_once() -> None:
    client = ImagetwinClient(KEY, base_url="http://127.0.0.1:9/v1")
    for bad in ({"timeout": 0}, {"timeout": -1.0}, {"connect_timeout": "5"}):
        with pytest.raises(ConfigurationError):
            client.with_options(**bad)  # type: ignore[arg-type]
    for bad_retries in (-1, True, 1.5):
        with pytest.raises(ConfigurationError):
            client.with_options(max_retries=bad_retries)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        client.with_options(max_retry_after=0)
    assert client.with_options(timeout=None).timings.timeout is None  # None: no time-out


async def test_a_bad_per_call_max_retries_is_refused_before_anything_is_sent(
    gateway: Gateway,
) -> None:
    async with ImagetwinClient(KEY, base_url=gateway.url) as client:
        for bad in (-1, True, 2.0, "3"):
            with pytest.raises(InvalidArgument):
                await client.get_result("c" * 64, max_retries=bad)  # type: ignore[arg-type]
    assert gateway.reads == 0


def test_a_views_repr_shows_its_options_never_the_key() -> None:
    client = ImagetwinClient(KEY, base_url="http://127.0.0.1:9/v1", scan_limit=RateLimit(5))
    view = client.with_options(timeout=7.5, max_retries=2)
    for text in (repr(view), str(view), repr(view.with_options(connect_timeout=1))):
        assert KEY not in text
        assert "***" in text
    assert "timeout=7.5" in repr(view)
    assert "max_retries=2" in repr(view)
    assert "view" not in repr(client)
    assert KEY not in repr(vars(view))
    assert KEY not in repr(vars(view._transport))
