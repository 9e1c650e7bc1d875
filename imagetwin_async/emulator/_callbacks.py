"""Best-effort delivery of scan-finished callbacks."""

from __future__ import annotations

import aiohttp

__all__ = ["CallbackSender"]


class CallbackSender:
    """POSTs callback JSON with a short time-out; one client session, opened on first use."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, payload: dict[str, str]) -> tuple[int | None, str | None]:
        """Return (HTTP status, None) or (None, what went wrong); never raises."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(url, json=payload, allow_redirects=False) as response:
                await response.read()
                return response.status, None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}".rstrip(": ")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
