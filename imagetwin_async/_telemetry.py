"""OpenTelemetry traces and metrics for the SDK: no-op unless ``opentelemetry-api`` is there.

    pip install 'imagetwin-async[otel]'      # then configure an SDK as usual; nothing else

Spans: ``imagetwin GET /result/{scanId}`` (etc.) per API call (attributes: status, attempts, limiter
wait) and ``imagetwin wait`` per ``wait_for_result``. Metrics (meter ``imagetwin_async``):

==============================  =========  ====================================================
``imagetwin.requests``          counter    answers, by ``http.request.method``, endpoint, status
``imagetwin.rate_limited``      counter    429 answers, by endpoint
``imagetwin.retries``           counter    attempts sent again, by endpoint and reason
``imagetwin.limiter.wait``      histogram  seconds an attempt waited for a rate-limit slot
``imagetwin.scans.waiting``     up-down    scans a ``wait_for_result`` is waiting for
``imagetwin.scan.reads``        histogram  result reads a scan took until it was done
==============================  =========  ====================================================

The API key is never an attribute; scan ids are (they name no one). The session and the client
call the few functions below; without OpenTelemetry each is a cheap no-op, and so is each while
no SDK is configured (the API's global providers are still its proxies): then no span is
started and no instrument is touched, as nothing would record them.
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = [
    "api_call",
    "note_read",
    "note_retry",
    "waiting",
]

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Span, Status, StatusCode
except ModuleNotFoundError:  # the `otel` extra is not installed: every hook is a no-op
    trace = None  # type: ignore[assignment]
    metrics = None  # type: ignore[assignment]

# Providers that record nothing: the API's own until an SDK is set. The metrics proxy is not
# public; without it every call records through the proxies (correct, only slower).
_SILENT_TRACERS: tuple[type, ...] = ()
_SILENT_METERS: tuple[type, ...] = ()
# Where the API keeps its global providers (None until one is set), to see "no SDK" without
# asking the API, which consults os.environ on every call while none is set (~2 us). Only
# while no environment variable names a provider (then the API would load it on first use).
_TRACE_GLOBALS: Any = None
_METRIC_GLOBALS: Any = None
if trace is not None:
    _SILENT_TRACERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    if "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ and hasattr(trace, "_TRACER_PROVIDER"):
        _TRACE_GLOBALS = trace
if metrics is not None:
    _SILENT_METERS = (metrics.NoOpMeterProvider,)
    try:
        from opentelemetry.metrics import _internal as _metrics_internal
        from opentelemetry.metrics._internal import _ProxyMeterProvider
    except ImportError:  # pragma: no cover - a future API that moved it
        pass
    else:
        _SILENT_METERS = (*_SILENT_METERS, _ProxyMeterProvider)
        if "OTEL_PYTHON_METER_PROVIDER" not in os.environ and hasattr(
            _metrics_internal, "_METER_PROVIDER"
        ):
            _METRIC_GLOBALS = _metrics_internal

_NAME = "imagetwin_async"


class _Instruments:
    """Created on first use, through the global providers (proxies until an SDK is set)."""

    def __init__(self) -> None:
        assert metrics is not None
        meter = metrics.get_meter(_NAME)
        self.requests = meter.create_counter(
            "imagetwin.requests", unit="{request}", description="API answers received"
        )
        self.rate_limited = meter.create_counter(
            "imagetwin.rate_limited", unit="{response}", description="429 answers"
        )
        self.retries = meter.create_counter(
            "imagetwin.retries", unit="{request}", description="attempts sent again"
        )
        self.limiter_wait = meter.create_histogram(
            "imagetwin.limiter.wait", unit="s", description="time waited for a rate-limit slot"
        )
        self.waiting = meter.create_up_down_counter(
            "imagetwin.scans.waiting", unit="{scan}", description="scans being waited for"
        )
        self.reads = meter.create_histogram(
            "imagetwin.scan.reads", unit="{read}", description="result reads until a scan was done"
        )


_instruments: _Instruments | None = None
# Result reads per scan id, while someone waits for it (bounded by the scans waiting).
_reads: collections.Counter[str] = collections.Counter()


def _tracing() -> bool:
    """Whether a span started now would go anywhere (an SDK's tracer provider is set)."""
    if trace is None or (_TRACE_GLOBALS is not None and _TRACE_GLOBALS._TRACER_PROVIDER is None):
        return False
    return not isinstance(trace.get_tracer_provider(), _SILENT_TRACERS)


def _get() -> _Instruments | None:
    """The instruments, or None while nothing would record them (no SDK's meter provider)."""
    if metrics is None or (_METRIC_GLOBALS is not None and _METRIC_GLOBALS._METER_PROVIDER is None):
        return None
    if isinstance(metrics.get_meter_provider(), _SILENT_METERS):
        return None
    return _made()


def _made() -> _Instruments | None:
    """The instruments (through the global providers' proxies), None without OpenTelemetry."""
    global _instruments  # noqa: PLW0603 - one set of instruments per process, made lazily
    if metrics is None:
        return None
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


class CallTrace:
    """What ``Transport.send`` reports about one API call; every method is cheap."""

    def __init__(self, span: Any, endpoint: str, method: str) -> None:
        self._span = span
        self._endpoint = endpoint
        self._method = method
        self.attempts = 0
        self.limiter_wait = 0.0
        self.status: int | None = None

    @property
    def _attrs(self) -> dict[str, str]:
        return {"http.request.method": self._method, "imagetwin.endpoint": self._endpoint}

    def waited(self, seconds: float) -> None:
        """An attempt got its rate-limit slot after ``seconds``: it goes out now."""
        self.attempts += 1
        self.limiter_wait += seconds
        inst = _get()
        if inst is not None:
            inst.limiter_wait.record(seconds, self._attrs)

    def answered(self, status: int) -> None:
        """An attempt was answered with ``status``."""
        self.status = status
        inst = _get()
        if inst is None:
            return
        attrs = self._attrs
        inst.requests.add(1, {**attrs, "http.response.status_code": status})
        if status == 429:
            inst.rate_limited.add(1, attrs)

    def __enter__(self) -> CallTrace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def finish(self, error: BaseException | None = None) -> None:
        """The call is over: its span gets the attempts, the wait, the last status."""
        status = self.status
        if self._span is None:
            return
        self._span.set_attribute("imagetwin.attempts", self.attempts)
        self._span.set_attribute("imagetwin.limiter_wait_s", self.limiter_wait)
        if status is not None:
            self._span.set_attribute("http.response.status_code", status)
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        elif status is not None and status >= 400:
            self._span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))


def api_call(method: str, endpoint: str, path: str) -> contextlib.AbstractContextManager[CallTrace]:
    """A span around one API call, retries included; yields its ``CallTrace``."""
    if not _tracing():  # no span: the CallTrace alone (metrics), as its own context
        return CallTrace(None, endpoint, method)
    return _traced_call(method, endpoint, path)


@contextlib.contextmanager
def _traced_call(method: str, endpoint: str, path: str) -> Iterator[CallTrace]:
    assert trace is not None
    tracer = trace.get_tracer(_NAME)
    attributes = {"http.request.method": method, "imagetwin.endpoint": endpoint, "url.path": path}
    with tracer.start_as_current_span(
        f"imagetwin {endpoint}",
        kind=trace.SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        call = CallTrace(span, endpoint, method)
        try:
            yield call
        except BaseException as exc:
            call.finish(exc)
            raise
        call.finish()


def note_retry(method: str, endpoint: str, why: str) -> None:
    inst = _get()
    if inst is not None:
        inst.retries.add(
            1, {"http.request.method": method, "imagetwin.endpoint": endpoint, "reason": why}
        )


def note_read(scan_id: str) -> None:
    """A result read of ``scan_id`` went out (counted only while someone waits for it)."""
    if scan_id in _reads:
        _reads[scan_id] += 1


@contextlib.contextmanager
def waiting(scan_id: str) -> Iterator[None]:
    """Around ``wait_for_result``: a span, the scans-waiting gauge, reads per finished scan."""
    inst = _made() if _tracing() or _get() is not None else None
    if inst is None or trace is None:
        yield
        return
    first = scan_id not in _reads  # two waiters on one scan: the first one records its reads
    if first:
        _reads[scan_id] = 0
    inst.waiting.add(1)
    span: Span
    with trace.get_tracer(_NAME).start_as_current_span(
        "imagetwin wait", attributes={"imagetwin.scan_id": scan_id}
    ) as span:
        try:
            yield
        finally:
            inst.waiting.add(-1)
            reads = _reads.pop(scan_id, 0) if first else _reads.get(scan_id, 0)
            span.set_attribute("imagetwin.reads", reads)
            if first:
                inst.reads.record(reads)
