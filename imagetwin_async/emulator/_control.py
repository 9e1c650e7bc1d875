"""The HTTP control API under ``/_emulator/``: drive and inspect the emulator from any process.

JSON in and out, camelCase keys like the vendor API. No authentication: the emulator binds to
loopback by default, and a test process on the same machine is the only intended caller.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._outcomes import LogNormalTime, Outcome, ProcessingTime
from ._state import Scan

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["add_control_routes", "outcome_from_json", "processing_time_from_json", "to_json"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_json(value: object) -> Any:  # noqa: PLR0911 - one return per JSON shape
    """Records, scans and settings as JSON-ready values (inf becomes null, times ISO 8601)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and math.isinf(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Scan):
        data = {
            f.name: getattr(value, f.name)
            for f in dataclasses.fields(value)
            if f.name != "report_pdf"
        }
        return {_camel(k): to_json(v) for k, v in data.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_camel(f.name): to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


class ControlError(ValueError):
    """A control request we cannot follow: answered 400."""


def _get(
    body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None
) -> Any:
    value = body.get(name, default)
    if value is not None and not isinstance(value, kind):
        raise ControlError(f"{name} has the wrong type: {value!r}")
    return value


def outcome_from_json(body: Mapping[str, Any]) -> Outcome:
    """``{"outcome": "finished"|"failed"|"never", "localDuplicateCount": 2, ...}``."""
    kind = body.get("outcome", "finished")
    time = _get(body, "processingTime", (int, float))
    if kind == "finished":
        counts = {
            name: _get(body, _camel(name), int, 0)
            for name in (
                "alteration_count",
                "local_duplicate_count",
                "extern_duplicate_count",
                "ai_image_count",
            )
        }
        score = _get(body, "highestScore", (int, float))
        return Outcome.finished(**counts, highest_score=score, processing_time=time)
    if kind == "failed":
        return Outcome.failed(processing_time=time)
    if kind == "never":
        return Outcome.never()
    raise ControlError(f"outcome must be finished, failed or never, got {kind!r}")


def processing_time_from_json(value: Any) -> float | ProcessingTime:
    """A number (fixed seconds) or ``{"median": 90, "sigma": 0.5}`` (log-normal)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):
        if "seconds" in value:
            return float(value["seconds"])
        if "median" in value:
            return LogNormalTime(
                float(value["median"]),
                float(value.get("sigma", 0.5)),
                float(value.get("pageExponent", 0.0)),
                float(value.get("sizeExponent", 0.0)),
            )
    raise ControlError(f"processingTime must be a number or {{median, sigma}}, got {value!r}")


def _settings(emu: Emulator) -> dict[str, Any]:
    return {
        "url": emu.url,
        "speed": emu.clock.speed,
        "rateLimitAlgorithm": to_json(emu.rate_limit_algorithm),
        "rateLimits": {k: list(v) for k, v in emu.limiter.limits.items()},
        "retryAfter": emu.retry_after,
        "processingTime": to_json(emu.processing_time),
        "corruptDocuments": emu.corrupt_documents,
        "sizeUnit": emu.size_unit,
        "seed": emu.seed,
        "time": emu.clock.now(),
    }


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise ControlError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    return body


_OK = {"ok": True}


class _Control:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    async def state(self, request: web.Request) -> web.Response:
        pending = [{**to_json(fault), "remaining": n} for fault, n in self.emu.faults.pending()]
        return web.json_response(
            {
                "settings": _settings(self.emu),
                "counters": to_json(self.emu.counters),
                "pendingFaults": pending,
            }
        )

    async def requests(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response(to_json(list(self.emu.requests)[since:]))

    async def scans(self, request: web.Request) -> web.Response:
        return web.json_response(to_json(list(self.emu.scans.values())))

    async def callbacks(self, request: web.Request) -> web.Response:
        return web.json_response(to_json(self.emu.callbacks))

    async def reset(self, request: web.Request) -> web.Response:
        self.emu.reset()
        return web.json_response(_OK)

    async def configure(self, request: web.Request) -> web.Response:
        body = await _body(request)
        options: dict[str, Any] = {}
        if "speed" in body:
            options["speed"] = float(_get(body, "speed", (int, float)))
        if "rateLimitAlgorithm" in body:
            options["rate_limit_algorithm"] = _get(body, "rateLimitAlgorithm", str)
        if "rateLimits" in body:
            limits = _get(body, "rateLimits", dict)
            options["rate_limits"] = {str(g): (int(n), float(p)) for g, (n, p) in limits.items()}
        if "retryAfter" in body:
            options["retry_after"] = _get(body, "retryAfter", bool)
        if "processingTime" in body:
            options["processing_time"] = processing_time_from_json(body["processingTime"])
        if "corruptDocuments" in body:
            if body["corruptDocuments"] not in {"fail", "reject", "accept"}:
                raise ControlError("corruptDocuments must be fail, reject or accept")
            options["corrupt_documents"] = body["corruptDocuments"]
        if "apiKeys" in body:
            options["api_keys"] = _get(body, "apiKeys", (list, dict))
        if "sizeUnit" in body:
            if body["sizeUnit"] not in {"MB", "MiB"}:
                raise ControlError("sizeUnit must be MB or MiB")
            options["size_unit"] = body["sizeUnit"]
        self.emu.configure(**options)
        return web.json_response(_settings(self.emu))

    async def script(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.emu.script(
            outcome_from_json(body),
            file_name=_get(body, "fileName", str),
            sha256=_get(body, "sha256", str),
            times=_get(body, "times", int),
        )
        return web.json_response(_OK)

    async def faults(self, request: web.Request) -> web.Response:
        body = await _body(request)
        self.emu.inject_fault(
            str(body.get("kind")),
            endpoint=_get(body, "endpoint", str),
            times=_get(body, "times", int, 1),
            retry_after=_get(body, "retryAfter", (int, float)),
            delay=float(_get(body, "delay", (int, float), 0.0)),
        )
        return web.json_response(_OK)

    async def drop_callbacks(self, request: web.Request) -> web.Response:
        body = await _body(request)
        times = body.get("times", 1)  # null: drop every callback until reset
        if times is not None and (not isinstance(times, int) or isinstance(times, bool)):
            raise ControlError(f"times must be an integer or null, got {times!r}")
        self.emu.drop_callbacks(times)
        return web.json_response(_OK)

    async def finish(self, request: web.Request) -> web.Response:
        body = await _body(request)
        scan_id = request.match_info["scan_id"]
        if scan_id not in self.emu.store.scans:
            return web.json_response({"message": f"No scan {scan_id}."}, status=404)
        outcome = outcome_from_json(body) if "outcome" in body else None
        return web.json_response(to_json(self.emu.finish_scan(scan_id, outcome)))

    async def overview(self, request: web.Request) -> web.Response:
        body = await _body(request)
        for name in ("scanId", "scanDate"):
            if not isinstance(body.get(name), str):
                raise ControlError(f"{name} is required (a string)")
        self.emu.add_overview_entry(
            body["scanId"],
            datetime.fromisoformat(body["scanDate"]),
            user=_get(body, "user", str),
            free_of_charge=bool(body.get("freeOfCharge", False)),
            api_scan=bool(body.get("apiScan", False)),
        )
        return web.json_response(_OK)


def _guarded(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def run(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except (ValueError, TypeError) as exc:  # ControlError is a ValueError
            return web.json_response({"message": str(exc)}, status=400)

    return run


def add_control_routes(app: web.Application, emu: Emulator) -> None:
    """Mount the control API (docs/emulator.md lists every route)."""
    control = _Control(emu)
    routes = [
        ("GET", "state", control.state),
        ("GET", "requests", control.requests),
        ("GET", "scans", control.scans),
        ("GET", "callbacks", control.callbacks),
        ("POST", "reset", control.reset),
        ("POST", "config", control.configure),
        ("POST", "script", control.script),
        ("POST", "faults", control.faults),
        ("POST", "callbacks/drop", control.drop_callbacks),
        ("POST", "scans/{scan_id}/finish", control.finish),
        ("POST", "overview", control.overview),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, f"/_emulator/{path}", _guarded(handler))
