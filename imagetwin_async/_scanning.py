"""Starting a scan: one POST through the session, its answer read, the new scan watched.

The one way a scan starts, for ``ImagetwinClient.scan`` and for batches alike: the poll
scheduler hears of every scan the moment its id is known (so its first read is timed from the
start), and the upload is closed once the request is over, retries included.
"""

from __future__ import annotations

from aiohttp import ClientTimeout

from ._models import ScanStarted
from ._polling import PollScheduler, ScanFeatures
from ._protocol import Request, read_scan_started
from ._session import BeforeSend, Transport
from ._uploads import Upload

__all__ = ["ScanStarter"]


class ScanStarter:
    """Sends scan POSTs for one client: ``await starter.start(request, upload)``."""

    def __init__(self, transport: Transport, scheduler: PollScheduler) -> None:
        self._transport = transport
        self._scheduler = scheduler

    async def start(
        self,
        request: Request,
        upload: Upload,
        *,
        block: bool = True,
        before_send: BeforeSend | None = None,
        timeout: ClientTimeout | None = None,
    ) -> ScanStarted:
        """POST ``upload`` as ``request`` says; the ``ScanStarted`` answer, or its error.

        ``before_send`` runs inside the rate-limit slot before each attempt (see
        ``Transport.send``). Takes ownership of ``upload``: it is closed when this returns.
        """
        try:
            response = await self._transport.send(
                request, upload=upload, block=block, before_send=before_send, timeout=timeout
            )
        finally:
            upload.close()
        started = read_scan_started(
            response.status, response.headers, response.body, request=request
        )
        expect_callback = any(name == "callbackUrl" for name, _ in request.form_fields)
        # Pages, images and bytes: the duration model predicts this scan from ones like it.
        features = ScanFeatures.of_parts(upload.parts)
        self._scheduler.note_started(
            started.scan_id, expect_callback=expect_callback, features=features
        )
        return started
