"""The User-Agent every request names: ``imagetwin-async/0.1.0 python/3.12.1 aiohttp/3.12.2``.

Lets the vendor (and a proxy's logs) tell which SDK version sent a request.
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata

import aiohttp

__all__ = ["user_agent"]


@functools.cache
def user_agent() -> str:
    try:
        version = metadata.version("imagetwin-async")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        version = "0.0.0"
    return (
        f"imagetwin-async/{version} python/{platform.python_version()} "
        f"aiohttp/{aiohttp.__version__}"
    )
