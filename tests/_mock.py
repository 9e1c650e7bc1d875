"""aioresponses, adapted to aiohttp 3.14 in this one place.

aioresponses 0.7.9 builds ``ClientResponse`` without the ``stream_writer`` argument that
aiohttp 3.14 requires (aioresponses issue #289, open). Until upstream fixes it, every response
it builds uses this subclass, which supplies a stand-in writer. Remove once fixed.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

from aiohttp import ClientResponse
from aioresponses import aioresponses as _aioresponses

__all__ = ["mocked"]


# Older aiohttp (the lowest versions CI tests) has no such argument.
_NEEDS_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


class _Response(ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        # The request is "already sent" (writer=None), so aiohttp only reads output_size.
        if _NEEDS_WRITER:
            kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class mocked(_aioresponses):
    """``aioresponses`` whose responses work under aiohttp 3.14."""

    def add(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        super().add(*args, **kwargs)
