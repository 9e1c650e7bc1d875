"""OpenTelemetry traces and metrics, read back through the SDK's in-memory exporters.

The user is an operator with a dashboard: a 429 storm, retries and slow slots must show, and
the API key must never reach a span, a metric or a log field.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from imagetwin_async import ImagetwinClient, ScanPending, ScanResult

from ._mock import mocked
from .conftest import API, KEY
from .test_client import RESULT, SCAN_ID

_SPANS = InMemorySpanExporter()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def _providers() -> None:
    """The global providers can be set once per process: the first use sets them."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_SPANS))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The spans of this test only (metrics are cumulative: the tests compare before/after)."""
    _SPANS.clear()
    return _SPANS


def points(name: str) -> list[Any]:
    data = _READER.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def total(name: str, **attributes: object) -> float:
    return sum(
        p.value
        for p in points(name)
        if all(p.attributes.get(k) == v for k, v in attributes.items())
    )


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def no_key_anywhere(spans: InMemorySpanExporter) -> None:
    for span in spans.get_finished_spans():
        assert KEY not in repr(dict(span.attributes or {})), span.name


async def test_a_span_per_api_call_with_status_attempts_and_limiter_wait(
    api: mocked, client: ImagetwinClient, spans: InMemorySpanExporter
) -> None:
    api.get(f"{API}/result/{SCAN_ID}", status=202)
    before = total("imagetwin.requests", **{"http.response.status_code": 202})
    assert isinstance(await client.get_result(SCAN_ID), ScanPending)

    (span,) = named(spans, "imagetwin GET /result/{scanId}")
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 202
    assert attributes["imagetwin.attempts"] == 1
    assert attributes["imagetwin.limiter_wait_s"] >= 0.0
    assert span.kind is trace.SpanKind.CLIENT
    assert total("imagetwin.requests", **{"http.response.status_code": 202}) == before + 1
    no_key_anywhere(spans)


async def test_a_429_then_success_counts_the_429_the_retry_and_two_attempts(
    api: mocked, client: ImagetwinClient, spans: InMemorySpanExporter
) -> None:
    """Another process shares the key: the dashboard must show the 429 and the retry."""
    url = f"{API}/result/{SCAN_ID}"
    api.get(url, status=429, headers={"Retry-After": "0"})
    api.get(url, payload=RESULT)
    limited, retried = total("imagetwin.rate_limited"), total("imagetwin.retries")

    assert isinstance(await client.get_result(SCAN_ID), ScanResult)

    (span,) = named(spans, "imagetwin GET /result/{scanId}")
    assert dict(span.attributes or {})["imagetwin.attempts"] == 2
    assert dict(span.attributes or {})["http.response.status_code"] == 200
    assert total("imagetwin.rate_limited") == limited + 1
    assert total("imagetwin.retries") == retried + 1
    assert points("imagetwin.limiter.wait")


async def test_a_failed_call_marks_its_span_as_an_error(
    api: mocked, client: ImagetwinClient, spans: InMemorySpanExporter
) -> None:
    api.get(f"{API}/result/{SCAN_ID}", status=404, payload={"message": "no such scan"})
    with pytest.raises(Exception):  # noqa: B017, PT011 - ScanNotFound, raised by the core
        await client.get_result(SCAN_ID)
    (span,) = named(spans, "imagetwin GET /result/{scanId}")
    assert span.status.status_code is trace.StatusCode.ERROR


async def test_a_wait_is_a_span_and_records_reads_per_scan(
    api: mocked, client: ImagetwinClient, spans: InMemorySpanExporter
) -> None:
    url = f"{API}/result/{SCAN_ID}"
    api.get(url, status=202)
    api.get(url, payload=RESULT)

    await client.wait_for_result(SCAN_ID, timeout=30)

    (wait,) = named(spans, "imagetwin wait")
    assert dict(wait.attributes or {})["imagetwin.scan_id"] == SCAN_ID
    assert dict(wait.attributes or {})["imagetwin.reads"] == 2
    reads = points("imagetwin.scan.reads")
    assert reads and max(p.max for p in reads) >= 2
    assert total("imagetwin.scans.waiting") == 0  # back to none once the result is in
    # The reads are children of the wait: one trace shows the whole story.
    calls = named(spans, "imagetwin GET /result/{scanId}")
    assert calls and all(c.context.trace_id == wait.context.trace_id for c in calls)


async def test_log_records_carry_structured_fields(
    api: mocked, client: ImagetwinClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{API}/result/{SCAN_ID}"
    api.get(url, status=503, headers={"Retry-After": "0"})
    api.get(url, status=202)
    with caplog.at_level(logging.DEBUG, logger="imagetwin_async"):
        await client.get_result(SCAN_ID)
    answered = [r for r in caplog.records if getattr(r, "status", None) is not None]
    assert [(r.method, r.path, r.status, r.attempt) for r in answered] == [  # type: ignore[attr-defined]
        ("GET", f"/result/{SCAN_ID}", 503, 1),
        ("GET", f"/result/{SCAN_ID}", 202, 2),
    ]
    assert all(r.wait >= 0 for r in answered)  # type: ignore[attr-defined]
    retries = [r for r in caplog.records if hasattr(r, "retry_in")]
    assert len(retries) == 1
    assert all(KEY not in r.getMessage() and KEY not in repr(vars(r)) for r in caplog.records)


def test_without_opentelemetry_every_hook_is_a_no_op() -> None:
    """The SDK must not need the `otel` extra: with opentelemetry unimportable it still works."""
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if not installed
from imagetwin_async import _telemetry as t
assert t.trace is None
with t.api_call("GET", "GET /result/{scanId}", "result/x") as call:
    call.waited(0.1)
    call.answered(200)
with t.waiting("x"):
    t.note_read("x")
t.note_retry("GET", "GET /result/{scanId}", "HTTP 503")
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_until_an_sdk_is_set_nothing_is_started_then_everything_records() -> None:
    """An operator who configures OpenTelemetry after creating the client (or never) pays
    nothing per request while nothing records; from the moment an SDK is set, spans and
    metrics flow, with no restart."""
    code = """
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from imagetwin_async import _telemetry as t

def started_tracer(*args, **kwargs):
    raise AssertionError("a tracer was asked for while no SDK is set")

real_get_tracer = trace.get_tracer
trace.get_tracer = started_tracer
with t.api_call("GET", "GET /result/{scanId}", "result/x") as call:
    call.waited(0.1)
    call.answered(200)
with t.waiting("x"):
    t.note_read("x")
assert t._instruments is None  # no instrument was even made
trace.get_tracer = real_get_tracer

spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
with t.api_call("GET", "GET /result/{scanId}", "result/x") as call:
    call.waited(0.1)
    call.answered(429)
names = [s.name for s in spans.get_finished_spans()]
assert names == ["imagetwin GET /result/{scanId}"], names
data = reader.get_metrics_data()
counted = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
assert {"imagetwin.requests", "imagetwin.rate_limited", "imagetwin.limiter.wait"} <= counted
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
