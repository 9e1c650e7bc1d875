"""Name the ``pip install`` to run when an optional extra is missing.

try:
    import redis.asyncio
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "redis", "imagetwin_async.redis") from exc
"""

from __future__ import annotations

__all__ = ["missing_extra"]

# What each extra installs, by top-level module name.
_EXTRA_MODULES: dict[str, frozenset[str]] = {
    "cli": frozenset({"click", "rich"}),
    "fastapi": frozenset({"fastapi", "starlette", "pydantic", "multipart", "python_multipart"}),
    "redis": frozenset({"redis"}),
    "otel": frozenset({"opentelemetry"}),
}


def missing_extra(exc: ModuleNotFoundError, extra: str, feature: str) -> ModuleNotFoundError:
    """``exc`` with a message naming the install command, when the missing module is the extra's.

    Any other missing module (a broken install of something else) is handed back unchanged.
    """
    top = (exc.name or "").partition(".")[0]
    if top not in _EXTRA_MODULES[extra]:
        return exc
    return ModuleNotFoundError(
        f"{feature} needs {top}, which is not installed: pip install 'imagetwin-async[{extra}]'",
        name=exc.name,
    )
