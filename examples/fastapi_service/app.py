"""A manuscript-checking service: upload a paper, get a scan id at once, fetch the result later.

    POST /manuscripts                    multipart field "manuscript" -> 202 {"scan_id": ...}
    GET  /manuscripts/{scan_id}          202 while running, 200 with the result (or the failure)
    POST /imagetwin/callbacks/{token}    Imagetwin's "scan finished" callback (only a hint)
    GET  /status                         callback counters and scheduler statistics

One ``ImagetwinClient`` lives as long as the app (its lifespan). Each accepted upload gets a
background task waiting for its result through the client's shared poll scheduler; with
``PUBLIC_URL`` set, scans are started with a callback URL, the callback makes that task's read
happen at once, and polling only runs every ``max_poll_interval`` as a safety net.

Configuration (environment): ``IMAGETWIN_API_KEY``, ``IMAGETWIN_BASE_URL`` (default: the real
API), ``PUBLIC_URL`` (this service as Imagetwin reaches it, e.g. ``https://my.service``; unset:
no callbacks, results are polled), ``IMAGETWIN_CALLBACK_TOKEN`` (optional fixed token, for
several workers or to survive restarts), ``IMAGETWIN_REDIS_URL`` (several workers: share the
rate limits, callbacks and results through Redis; then the token must be set),
``IMAGETWIN_EMULATOR_SPEED`` (only against an emulator running N times faster: divides the
rate windows and poll intervals). Run with ``python -m examples.fastapi_service``, or with
four workers: ``uvicorn examples.fastapi_service.app:create_app --factory --workers 4``
(see docs/fleet.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import attrs
from fastapi import Depends, FastAPI, HTTPException, Request, Response, UploadFile, status
from pydantic import BaseModel

from imagetwin_async import (
    AmbiguousSubmission,
    ImagetwinClient,
    ImagetwinError,
    InvalidUpload,
    Limiter,
    RateLimit,
    RateLimitBusy,
    ScanResult,
)
from imagetwin_async.fastapi import (
    DEFAULT_CALLBACK_PATH,
    CallbackUrlDep,
    ImagetwinClientDep,
    callback_router,
    get_callback_receiver,
    use_client,
)
from imagetwin_async.fleet import Fleet, FleetError, open_fleet

__all__ = ["ManuscriptStatus", "Manuscripts", "RedactCallbackTokens", "Settings", "create_app"]

DEFAULT_BASE_URL = "https://api.imagetwin.ai/v1"


@dataclass(frozen=True)
class Settings:
    """Where the API is and where Imagetwin can reach us; ``from_env()`` reads the environment."""

    api_key: str | None = None  # None: the client reads IMAGETWIN_API_KEY
    base_url: str = DEFAULT_BASE_URL
    public_url: str | None = None  # this service's public base URL; None: no callbacks
    callback_token: str | None = None  # None: a fresh secret per start
    redis_url: str | None = None  # several workers share limits, callbacks, results; None: alone
    speed: float = 1.0  # an emulator running this many times faster than the real API

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            api_key=os.environ.get("IMAGETWIN_API_KEY"),
            base_url=os.environ.get("IMAGETWIN_BASE_URL", DEFAULT_BASE_URL),
            public_url=os.environ.get("PUBLIC_URL") or None,
            callback_token=os.environ.get("IMAGETWIN_CALLBACK_TOKEN") or None,
            redis_url=os.environ.get("IMAGETWIN_REDIS_URL") or None,
            speed=float(os.environ.get("IMAGETWIN_EMULATOR_SPEED", "1")),
        )

    def limits(self) -> tuple[RateLimit, RateLimit]:
        """The API's budget (20 scans, 60 reads a minute), on the emulator's clock."""
        minute = 60.0 / self.speed
        return RateLimit(20, per=minute), RateLimit(60, per=minute)

    @property
    def callbacks_url(self) -> str | None:
        """Where the callback route is, seen from outside (the token is appended to it)."""
        if self.public_url is None:
            return None
        return self.public_url.rstrip("/") + DEFAULT_CALLBACK_PATH


class ManuscriptStatus(BaseModel):
    scan_id: str
    status: Literal["running", "finished", "failed"]
    result: dict[str, Any] | None = None
    error: str | None = None


class Manuscripts:
    """The scans this service started, each with the task that waits for its result.

    In memory for the example; a real service keeps scan ids and results in its database and,
    after a restart, calls ``wait_for_result`` again for the scans not yet finished.
    """

    def __init__(self, client: ImagetwinClient, fleet: Fleet | None = None) -> None:
        self._client = client
        self._fleet = fleet
        self._waits: dict[str, asyncio.Task[ScanResult]] = {}

    async def track(self, scan_id: str) -> None:
        # Wait right away: the scheduler reads a scan only while someone waits for it.
        task = asyncio.get_running_loop().create_task(
            self._client.wait_for_result(scan_id), name=f"wait-{scan_id[:12]}"
        )
        task.add_done_callback(_consume)
        self._waits[scan_id] = task
        if self._fleet is not None:
            # A GET for it may land on another worker: tell the fleet it exists.
            with contextlib.suppress(FleetError):
                await self._fleet.announce(scan_id)

    async def wait(self, scan_id: str, seconds: float) -> None:
        """Wait up to ``seconds`` for a scan this worker tracks to end."""
        task = self._waits.get(scan_id)
        if task is not None:
            with contextlib.suppress(TimeoutError, ImagetwinError):
                await asyncio.wait_for(asyncio.shield(task), seconds)

    async def lookup(self, scan_id: str) -> ManuscriptStatus | None:
        """This worker's record of the scan, else what the fleet knows (another worker's)."""
        found = self.status(scan_id)
        if found is not None or self._fleet is None:
            return found
        try:
            shared = await self._fleet.peek(scan_id)
        except FleetError:
            return None
        if shared is None:
            return None
        if shared == "running":
            return ManuscriptStatus(scan_id=scan_id, status="running")
        if isinstance(shared, ScanResult):
            return ManuscriptStatus(scan_id=scan_id, status="finished", result=attrs.asdict(shared))
        return ManuscriptStatus(scan_id=scan_id, status="failed", error=str(shared))

    def status(self, scan_id: str) -> ManuscriptStatus | None:
        task = self._waits.get(scan_id)
        if task is None:
            return None
        if not task.done():
            return ManuscriptStatus(scan_id=scan_id, status="running")
        if task.cancelled():
            return ManuscriptStatus(scan_id=scan_id, status="failed", error="cancelled")
        error = task.exception()
        if error is not None:
            return ManuscriptStatus(scan_id=scan_id, status="failed", error=str(error))
        return ManuscriptStatus(
            scan_id=scan_id, status="finished", result=attrs.asdict(task.result())
        )

    async def close(self) -> None:
        for task in self._waits.values():
            task.cancel()
        await asyncio.gather(*self._waits.values(), return_exceptions=True)


def _consume(task: asyncio.Task[ScanResult]) -> None:
    # The outcome is read by GET; retrieving it here keeps asyncio from logging it as lost.
    if not task.cancelled():
        task.exception()


class RedactCallbackTokens(logging.Filter):
    """Masks the callback token in access-log lines: it is a secret, and it is in the URL.

    >>> logging.getLogger("uvicorn.access").addFilter(RedactCallbackTokens())
    """

    _TOKEN = re.compile(re.escape(DEFAULT_CALLBACK_PATH) + r"/[^/?\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._TOKEN.sub(DEFAULT_CALLBACK_PATH + "/***", arg)
                if isinstance(arg, str)
                else arg
                for arg in record.args
            )
        return True


def get_manuscripts(request: Request) -> Manuscripts:
    manuscripts: Manuscripts = request.app.state.manuscripts
    return manuscripts


ManuscriptsDep = Annotated[Manuscripts, Depends(get_manuscripts)]


def _default_client(
    s: Settings, scan: RateLimit | Limiter, result: RateLimit | Limiter
) -> ImagetwinClient:
    return ImagetwinClient(
        s.api_key,
        base_url=s.base_url,
        scan_limit=scan,
        result_limit=result,
        poll_interval=5.0 / s.speed,
        max_poll_interval=60.0 / s.speed,
    )


def _lifespan(
    settings: Settings, make_client: Callable[[Settings], ImagetwinClient] | None
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Under `uvicorn --workers N` (no __main__), each worker masks the token in its own
        # access log; its logging is configured by now.
        access = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, RedactCallbackTokens) for f in access.filters):
            access.addFilter(RedactCallbackTokens())
        async with contextlib.AsyncExitStack() as stack:
            scan_limit: RateLimit | Limiter
            result_limit: RateLimit | Limiter
            scan_limit, result_limit = settings.limits()
            fleet = None
            if settings.redis_url is not None:
                # Several workers: one budget, callbacks to whichever worker waits, one read
                # per finished scan. The token must be shared, or workers refuse each other's.
                if settings.callbacks_url is not None and settings.callback_token is None:
                    raise RuntimeError("IMAGETWIN_REDIS_URL needs IMAGETWIN_CALLBACK_TOKEN set")
                limits, fleet = await stack.enter_async_context(
                    open_fleet(
                        settings.redis_url,
                        settings.api_key or os.environ.get("IMAGETWIN_API_KEY", ""),
                        scan_limit=scan_limit,
                        result_limit=result_limit,
                        # The fleet's scheduler: a dead one is replaced within ~4/3 of this.
                        leader_lease=max(5.0 / settings.speed, 1.0),
                        waiter_ttl=max(15.0 / settings.speed, 3.0),
                    )
                )
                scan_limit, result_limit = limits.scan, limits.result
            client = (
                make_client(settings)
                if make_client is not None
                else _default_client(settings, scan_limit, result_limit)
            )
            await stack.enter_async_context(
                use_client(
                    app,
                    client,
                    public_url=settings.callbacks_url,
                    token=settings.callback_token,
                    fleet=fleet,
                )
            )
            app.state.manuscripts = Manuscripts(client, fleet)
            app.state.fleet = fleet
            try:
                yield
            finally:
                await app.state.manuscripts.close()  # before the client closes under them

    return lifespan


def create_app(
    settings: Settings | None = None,
    *,
    make_client: Callable[[Settings], ImagetwinClient] | None = None,
) -> FastAPI:
    """The service. ``make_client`` builds the client at start-up (tests pass fast timings)."""
    settings = settings or Settings.from_env()
    lifespan = _lifespan(settings, make_client)
    app = FastAPI(title="Manuscript checks", lifespan=lifespan)
    app.include_router(callback_router())

    @app.post("/manuscripts", status_code=status.HTTP_202_ACCEPTED)
    async def submit(
        manuscript: UploadFile,
        response: Response,
        client: ImagetwinClientDep,
        callback_url: CallbackUrlDep,
        manuscripts: ManuscriptsDep,
        *,
        wait: float = 0.0,
    ) -> ManuscriptStatus:
        """Start the scan; with ``?wait=S``, answer with its result if it ends within S s."""
        # The UploadFile's SpooledTemporaryFile is seekable: the client streams it from where
        # Starlette put it (memory, or its own temporary file past 1 MiB), with no second copy.
        # It must be sent before this handler returns: FastAPI closes it after the response.
        try:
            started = await client.scan(manuscript, callback_url=callback_url, block=False)
        except InvalidUpload as exc:
            # A number: Starlette renamed the constant, and older versions lack the new name.
            raise HTTPException(422, exc.message) from exc
        except RateLimitBusy as exc:
            # 20 scans a minute: tell the uploader when to retry rather than hold the request.
            retry = max(1, round(exc.retry_after or 3))
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "the scan budget is spent for now",
                headers={"Retry-After": str(retry)},
            ) from exc
        except AmbiguousSubmission as exc:
            # The scan may exist (and be billed): never resubmit blindly; an operator checks.
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY, "the scan may have started: check before retrying"
            ) from exc
        except ImagetwinError as exc:
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, exc.message) from exc
        await manuscripts.track(started.scan_id)
        response.headers["Location"] = f"/manuscripts/{started.scan_id}"
        if wait > 0:
            await manuscripts.wait(started.scan_id, min(wait, 600.0))
            found = manuscripts.status(started.scan_id)
            if found is not None and found.status != "running":
                response.status_code = status.HTTP_200_OK
                return found
        return ManuscriptStatus(scan_id=started.scan_id, status="running")

    @app.get("/manuscripts/{scan_id}")
    async def result(
        scan_id: str, response: Response, manuscripts: ManuscriptsDep
    ) -> ManuscriptStatus:
        found = await manuscripts.lookup(scan_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such manuscript")
        if found.status == "running":
            response.status_code = status.HTTP_202_ACCEPTED
            response.headers["Retry-After"] = "5"
        return found

    @app.get("/status")
    async def service_status(request: Request, client: ImagetwinClientDep) -> dict[str, Any]:
        callbacks = None
        if settings.callbacks_url is not None:
            callbacks = attrs.asdict(get_callback_receiver(request).stats)
        fleet: Fleet | None = request.app.state.fleet
        return {
            "callbacks": callbacks,
            "polling": attrs.asdict(client.scheduler.stats),
            "waiting": client.scheduler.waiting,
            "fleet": attrs.asdict(fleet.stats) if fleet is not None else None,
            "pid": os.getpid(),
        }

    return app
