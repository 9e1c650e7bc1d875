"""pytest fixtures for testing code that talks to Imagetwin, against the local emulator.

Registered through the ``pytest11`` entry point, so installing the package is enough::

    async def test_scan(imagetwin_emulator):
        async with ImagetwinClient(**imagetwin_emulator.client_kwargs()) as client:
            ...                 # the emulator's URL and key, the client's timings at its speed

    @pytest.mark.imagetwin_emulator(speed=60, rate_limit_algorithm="fixed")
    async def test_fast(imagetwin_emulator): ...

    async def test_two(imagetwin_emulator_factory):
        slow = await imagetwin_emulator_factory(processing_time=30)

``imagetwin_emulator_thread`` runs one in a background thread for synchronous tests. The
async fixtures need pytest-asyncio; without it they fail with a message saying so, and the
rest of the test session is unaffected (the emulator itself is imported only when used).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from imagetwin_async.emulator import Emulator, ThreadedEmulator

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without the dev extras
    HAVE_PYTEST_ASYNCIO = False
else:
    HAVE_PYTEST_ASYNCIO = True

__all__ = [
    "imagetwin_emulator",
    "imagetwin_emulator_factory",
    "imagetwin_emulator_thread",
    "pytest_configure",
]

EmulatorFactory = Callable[..., Awaitable["Emulator"]]
_MARKER = "imagetwin_emulator"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**options): options for the imagetwin_emulator fixture "
        "(Emulator keyword arguments, e.g. speed=60, rate_limit_algorithm='fixed')",
    )


def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    # Closest marker last, so a function's marker overrides its class's or module's.
    for marker in reversed(list(request.node.iter_markers(_MARKER))):
        options.update(marker.kwargs)
    return options


if HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def imagetwin_emulator_factory() -> AsyncIterator[EmulatorFactory]:
        """An async callable starting an Emulator with the given options; all stop at teardown."""
        from imagetwin_async.emulator import Emulator  # noqa: PLC0415 - import only when used

        started: list[Emulator] = []

        async def make(**options: Any) -> Emulator:
            options.setdefault("host", "127.0.0.1")
            options.setdefault("port", 0)
            emulator = await Emulator(**options).start()
            started.append(emulator)
            return emulator

        try:
            yield make
        finally:
            for emulator in reversed(started):
                await emulator.stop()

    @pytest_asyncio.fixture
    async def imagetwin_emulator(
        request: pytest.FixtureRequest, imagetwin_emulator_factory: EmulatorFactory
    ) -> Emulator:
        """A running Emulator on a free loopback port (options from the marker, if any)."""
        return await imagetwin_emulator_factory(**_marker_options(request))

else:  # pragma: no cover

    @pytest.fixture
    def imagetwin_emulator_factory() -> Any:
        pytest.fail(
            "the imagetwin_emulator fixtures need pytest-asyncio (pip install pytest-asyncio)"
        )

    @pytest.fixture
    def imagetwin_emulator() -> Any:
        pytest.fail(
            "the imagetwin_emulator fixtures need pytest-asyncio (pip install pytest-asyncio)"
        )


@pytest.fixture
def imagetwin_emulator_thread(request: pytest.FixtureRequest) -> Iterator[ThreadedEmulator]:
    """An emulator serving from a background thread, for synchronous tests and subprocesses."""
    from imagetwin_async.emulator import ThreadedEmulator  # noqa: PLC0415

    options = {"host": "127.0.0.1", "port": 0, **_marker_options(request)}
    with ThreadedEmulator(**options) as emulator:
        yield emulator
