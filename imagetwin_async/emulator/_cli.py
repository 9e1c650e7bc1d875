"""``python -m imagetwin_async.emulator``: serve the emulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence
from typing import Any

from ._emulator import DEFAULT_API_KEY, Emulator
from ._outcomes import LogNormalTime

__all__ = ["add_arguments", "build_parser", "emulator_options", "main", "serve"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the emulator's options to ``parser`` (the ``imagetwin emulator`` command reuses it)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="time factor: 60 makes an emulated minute last one second (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        choices=["fixed", "sliding", "token-bucket", "off"],
        default="sliding",
        help="server-side rate-limit algorithm (default: %(default)s)",
    )
    parser.add_argument(
        "--no-retry-after", action="store_true", help="answer 429 without a Retry-After header"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"a valid API key; repeat for several (default: {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--processing-time",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="emulated seconds every scan takes (default: %(default)s)",
    )
    parser.add_argument(
        "--processing-sigma",
        type=float,
        default=None,
        metavar="SIGMA",
        help="draw processing times log-normally, --processing-time being the median",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and processing times")
    parser.add_argument(
        "--no-control-api", action="store_true", help="do not serve /_emulator/... routes"
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(
        argparse.ArgumentParser(
            prog="python -m imagetwin_async.emulator",
            description="Serve a local emulator of the Imagetwin API (base URL http://HOST:PORT/v1).",
        )
    )


def emulator_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Emulator`` keyword arguments from parsed ``add_arguments`` options."""
    processing: float | LogNormalTime = args.processing_time
    if args.processing_sigma is not None:
        processing = LogNormalTime(args.processing_time, args.processing_sigma)
    return {
        "host": args.host,
        "port": args.port,
        "speed": args.speed,
        "rate_limit_algorithm": None if args.rate_limit == "off" else args.rate_limit,
        "retry_after": not args.no_retry_after,
        "api_keys": args.api_keys or [DEFAULT_API_KEY],
        "processing_time": processing,
        "seed": args.seed,
        "control_api": not args.no_control_api,
    }


async def serve(options: dict[str, Any], *, announce: bool = True) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with Emulator(**options) as emu:
        if announce:
            algorithm = emu.rate_limit_algorithm or "off"
            print(
                f"Imagetwin emulator at {emu.url} (speed {emu.clock.speed:g}, rate limit "
                f"{algorithm}, {len(emu.api_keys)} API key(s)); Ctrl-C to stop",
                flush=True,
            )
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(serve(emulator_options(args)))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken, the address is not ours...
        print(f"error: {exc}")
        return 1
    return 0
