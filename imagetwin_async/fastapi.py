"""FastAPI integration: one client per app, a dependency to reach it, and the callback route.

    from fastapi import FastAPI
    from imagetwin_async import ImagetwinClient
    from imagetwin_async.fastapi import (
        CallbackUrlDep, ImagetwinClientDep, callback_router, imagetwin_lifespan,
    )

    app = FastAPI(lifespan=imagetwin_lifespan(public_url="https://my.service/imagetwin/callbacks"))
    app.include_router(callback_router())

    @app.post("/check")
    async def check(
        paper: UploadFile, client: ImagetwinClientDep, callback_url: CallbackUrlDep
    ) -> dict[str, str]:
        started = await client.scan(paper, callback_url=callback_url)
        return {"scan_id": started.scan_id}  # then client.wait_for_result(scan_id) somewhere

Several workers (``uvicorn --workers 4``, replicas): set ``IMAGETWIN_REDIS_URL`` and
``IMAGETWIN_CALLBACK_TOKEN`` (or pass ``redis_url=`` / ``token=``) and ``imagetwin_lifespan``
shares the rate limits, the callbacks and the results among them (``imagetwin_async.fleet``;
needs the ``redis`` extra too). See docs/fleet.md.

Responses: ``ScanResultModel``, ``ScanStartedModel`` and ``ScanOutcomeModel`` are pydantic
models of the SDK's values, usable as ``response_model`` (return the SDK object itself):

    @app.get("/papers/{scan_id}", response_model=ScanResultModel)
    async def paper(scan_id: str, client: ImagetwinClientDep) -> Any:
        return await client.wait_for_result(scan_id)

Needs the ``fastapi`` extra (``pip install imagetwin-async[fastapi]``); the rest of the SDK
never imports this module, so it works without FastAPI installed.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Annotated, Final

from ._callbacks import CallbackReceiver, CallbackStats
from ._client import API_KEY_ENV, ImagetwinClient
from ._errors import ConfigurationError
from ._extras import missing_extra
from ._limits import RateLimit

try:
    from fastapi import APIRouter, Depends, FastAPI, Request, Response
    from starlette.routing import NoMatchFound
except ModuleNotFoundError as _missing:  # exercised by the wheel smoke test
    raise missing_extra(_missing, "fastapi", "imagetwin_async.fastapi") from _missing

from ._responses import ScanErrorModel, ScanOutcomeModel, ScanResultModel, ScanStartedModel

if TYPE_CHECKING:  # the fleet needs the redis extra: imported only when Redis is configured
    from .fleet import Fleet

__all__ = [
    "CALLBACK_ROUTE_NAME",
    "DEFAULT_CALLBACK_PATH",
    "CallbackReceiver",
    "CallbackReceiverDep",
    "CallbackStats",
    "CallbackUrlDep",
    "ImagetwinClientDep",
    "ScanErrorModel",
    "ScanOutcomeModel",
    "ScanResultModel",
    "ScanStartedModel",
    "callback_router",
    "get_callback_receiver",
    "get_callback_url",
    "get_fleet",
    "get_imagetwin_client",
    "imagetwin_lifespan",
    "use_client",
]

logger: logging.Logger = logging.getLogger("imagetwin_async.fastapi")

DEFAULT_CALLBACK_PATH: Final = "/imagetwin/callbacks"
CALLBACK_ROUTE_NAME: Final = "imagetwin_callback"
REDIS_URL_ENV: Final = "IMAGETWIN_REDIS_URL"
CALLBACK_TOKEN_ENV: Final = "IMAGETWIN_CALLBACK_TOKEN"  # noqa: S105 - a variable's name
_CLIENT: Final = "imagetwin_client"
_RECEIVER: Final = "imagetwin_callbacks"
_FLEET: Final = "imagetwin_fleet"
_SAMPLE_TOKEN: Final = "TOKEN"  # noqa: S105 - a placeholder to build a path with, no secret


@contextlib.asynccontextmanager
async def use_client(
    app: FastAPI,
    client: ImagetwinClient,
    *,
    public_url: str | None = None,
    token: str | None = None,
    fleet: Fleet | None = None,
) -> AsyncIterator[CallbackReceiver | None]:
    """Inside your own lifespan: make ``client`` the app's, and close it on the way out.

    >>> @contextlib.asynccontextmanager
    ... async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    ...     async with use_client(app, ImagetwinClient(), public_url=url) as receiver:
    ...         yield

    With ``public_url`` (where Imagetwin reaches your callback route from outside) it also
    makes a ``CallbackReceiver`` for the dependencies and ``callback_router()`` to use, and
    yields it; without, it yields None and scans are polled. With ``fleet`` (several workers
    on one key, see ``imagetwin_async.fleet``) callbacks go to the fleet, which hands each to
    the worker waiting for that scan, and finished results are shared.
    """
    receiver = None
    if public_url is not None:
        receiver = CallbackReceiver(
            fleet if fleet is not None else client,
            public_url,
            token=token,
            rehint_after=client.scheduler.max_poll_interval,
        )
        _warn_without_route(app, receiver)
    setattr(app.state, _CLIENT, client)
    setattr(app.state, _RECEIVER, receiver)
    setattr(app.state, _FLEET, fleet)
    try:
        async with client, contextlib.AsyncExitStack() as stack:
            if fleet is not None:
                await stack.enter_async_context(fleet.attach(client))
            yield receiver
    finally:
        setattr(app.state, _CLIENT, None)
        setattr(app.state, _RECEIVER, None)
        setattr(app.state, _FLEET, None)


def imagetwin_lifespan(
    make_client: Callable[..., ImagetwinClient] = ImagetwinClient,
    *,
    public_url: str | None = None,
    token: str | None = None,
    redis_url: str | None = None,
    api_key: str | None = None,
    scan_limit: RateLimit = RateLimit(20, per=60.0),  # noqa: B008 - frozen value
    result_limit: RateLimit = RateLimit(60, per=60.0),  # noqa: B008 - frozen value
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A ``lifespan=`` for apps that need nothing else at start-up: ``use_client`` around
    a client made by ``make_client`` once the app starts (so env vars are read then).

    >>> app = FastAPI(lifespan=imagetwin_lifespan(public_url=os.environ.get("PUBLIC_URL")))

    Several workers: with ``redis_url`` (default: ``IMAGETWIN_REDIS_URL``) every worker shares
    the key's rate limits (``scan_limit`` / ``result_limit``), callbacks and results through
    Redis; ``make_client`` is then called with ``scan_limit=`` and ``result_limit=`` limiters.
    ``token`` (default: ``IMAGETWIN_CALLBACK_TOKEN``) must then be set when ``public_url`` is:
    each worker would otherwise draw its own, and refuse the others' callbacks. ``api_key``
    defaults to ``IMAGETWIN_API_KEY``.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = redis_url or os.environ.get(REDIS_URL_ENV) or None
        shared_token = token or os.environ.get(CALLBACK_TOKEN_ENV) or None
        if url is None:
            async with use_client(app, make_client(), public_url=public_url, token=shared_token):
                yield
            return
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise ConfigurationError(
                f"a fleet shares one API key's budget: pass api_key= or set {API_KEY_ENV}"
            )
        if public_url is not None and shared_token is None:
            raise ConfigurationError(
                f"several workers need one callback token: set {CALLBACK_TOKEN_ENV} (e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))') or pass token="
            )
        from .fleet import open_fleet  # noqa: PLC0415 - the redis extra, only when asked for

        async with open_fleet(url, key, scan_limit=scan_limit, result_limit=result_limit) as (
            limits,
            fleet,
        ):
            try:
                inspect.signature(make_client).bind(scan_limit=None, result_limit=None)
            except TypeError:
                raise ConfigurationError(
                    "with a redis_url, make_client must take scan_limit= and result_limit= "
                    "(the limiters the workers share)"
                ) from None
            client = make_client(scan_limit=limits.scan, result_limit=limits.result)
            async with use_client(
                app, client, public_url=public_url, token=shared_token, fleet=fleet
            ):
                yield

    return lifespan


def get_imagetwin_client(request: Request) -> ImagetwinClient:
    """Dependency: the app's client (set up by ``use_client`` / ``imagetwin_lifespan``)."""
    client = getattr(request.app.state, _CLIENT, None)
    if isinstance(client, ImagetwinClient):
        return client
    raise RuntimeError("no ImagetwinClient: create the app with lifespan=imagetwin_lifespan()")


def get_callback_receiver(request: Request) -> CallbackReceiver:
    """Dependency: the app's callback receiver (``use_client`` was given a ``public_url``)."""
    receiver = getattr(request.app.state, _RECEIVER, None)
    if isinstance(receiver, CallbackReceiver):
        return receiver
    raise RuntimeError("no CallbackReceiver: pass public_url= to imagetwin_lifespan/use_client")


def get_fleet(request: Request) -> Fleet | None:
    """Dependency: the app's ``Fleet`` when workers share Redis, else None."""
    fleet: Fleet | None = getattr(request.app.state, _FLEET, None)
    return fleet


def get_callback_url(request: Request) -> str | None:
    """Dependency: the ``callback_url=`` for ``scan``; None when the app takes no callbacks."""
    receiver = getattr(request.app.state, _RECEIVER, None)
    return receiver.callback_url if isinstance(receiver, CallbackReceiver) else None


ImagetwinClientDep = Annotated[ImagetwinClient, Depends(get_imagetwin_client)]
CallbackReceiverDep = Annotated[CallbackReceiver, Depends(get_callback_receiver)]
CallbackUrlDep = Annotated[str | None, Depends(get_callback_url)]


def callback_router(
    receiver: CallbackReceiver | None = None, *, path: str | None = None
) -> APIRouter:
    """An ``APIRouter`` with the callback route, ``POST {path}/{token}``.

    >>> app.include_router(callback_router())          # the receiver made by the lifespan
    >>> app.include_router(callback_router(receiver))  # or one you made yourself

    ``path`` defaults to the path of the receiver's ``public_url`` (without a receiver, to
    ``DEFAULT_CALLBACK_PATH``); set it when a proxy rewrites the path. The route is left out
    of the OpenAPI schema: it is for Imagetwin, not for your API's users.
    """
    if path is None:
        path = receiver.path if receiver is not None else DEFAULT_CALLBACK_PATH
    router = APIRouter()

    async def imagetwin_callback(token: str, request: Request) -> Response:
        target = receiver if receiver is not None else get_callback_receiver(request)
        content_length = request.headers.get("content-length")
        status = target.check(
            token, int(content_length) if content_length and content_length.isdigit() else None
        )
        if status is None:
            status = target.receive(await target.read_body(request.stream()))
        return Response(status_code=status)

    router.add_api_route(
        f"{path.rstrip('/')}/{{token}}",
        imagetwin_callback,
        methods=["POST"],
        name=CALLBACK_ROUTE_NAME,
        include_in_schema=False,
        response_class=Response,
    )
    return router


def _warn_without_route(app: FastAPI, receiver: CallbackReceiver) -> None:
    # A route/public_url mismatch would turn every callback into a 404 and every scan into a
    # slow poll, silently: say so at start-up. Looked up by name, as url_for does, which sees
    # through included routers and their prefixes.
    wanted = f"{receiver.path}/{_SAMPLE_TOKEN}"
    try:
        found = str(app.url_path_for(CALLBACK_ROUTE_NAME, token=_SAMPLE_TOKEN))
    except NoMatchFound:
        found = None
    # A proxy may strip a prefix (public /svc/imagetwin/..., route /imagetwin/...): a suffix is
    # enough.
    if found is None or not wanted.endswith(found):
        logger.warning(
            "callbacks go to %s/..., but the app's callback route is %s: include "
            "callback_router() with a path matching public_url's",
            receiver.public_url,
            found or "missing",
        )
