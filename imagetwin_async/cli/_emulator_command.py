"""``imagetwin emulator``: serve a local emulator of the API, with neither click nor rich.

The emulator needs only aiohttp, so this command works after a bare ``pip install
imagetwin-async``; ``main`` routes ``imagetwin emulator ...`` here before importing click.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ._exitcodes import ExitCode

__all__ = ["serve_emulator"]


def serve_emulator(args: Sequence[str]) -> int:
    """Serve until interrupted; ``args`` are the emulator's options (see ``--help``)."""
    # Imported here: serving needs aiohttp.web and the emulator, the other commands do not.
    from ..emulator import DEFAULT_API_KEY, add_arguments, emulator_options, serve  # noqa: PLC0415

    parser = add_arguments(
        argparse.ArgumentParser(
            prog="imagetwin emulator",
            description="Serve a local emulator of the Imagetwin API, to try imagetwin or test "
            "your code without a key. Point the CLI at it with --base-url and --api-key.",
        )
    )
    try:
        ns = parser.parse_args(list(args))
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return int(exc.code or 0)
    options = emulator_options(ns)
    key = (ns.api_keys or [DEFAULT_API_KEY])[0]
    if ns.port:
        # One line, never wrapped: it is a command to copy.
        hint = (
            f"imagetwin --base-url http://{ns.host}:{ns.port}/v1 --api-key {key}"
            + (f" --speed {ns.speed:g}" if ns.speed != 1 else "")
            + " scan PATH..."
        )
        print(f"Use it with: {hint}", file=sys.stderr, flush=True)
    try:
        asyncio.run(serve(options))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken, the address is not ours
        print(f"imagetwin: cannot serve on {ns.host}:{ns.port}: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    return ExitCode.CLEAN
