"""Run the example service: ``python -m examples.fastapi_service [--emulator]``.

With ``--emulator`` a local Imagetwin emulator runs in the same process (and event loop), and
the service is configured to use it and to receive its callbacks: nothing leaves the machine,
no API key is needed. Without it, the environment configures the service (see ``app.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import uvicorn

from imagetwin_async.emulator import Emulator

from .app import RedactCallbackTokens, Settings, create_app


async def serve(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    emulator = None
    if args.emulator:
        emulator = await Emulator(
            host="127.0.0.1", port=0, speed=args.speed, processing_time=args.processing_time
        ).start()
        settings = Settings(
            api_key=emulator.api_key,
            base_url=emulator.url,
            public_url=os.environ.get("PUBLIC_URL") or f"http://{args.host}:{args.port}",
            callback_token=settings.callback_token,
        )
        print(f"emulator: {emulator.url} (x{args.speed}, scans take {args.processing_time} s)")
    print(f"service:  http://{args.host}:{args.port}  (callbacks: {settings.callbacks_url})")
    print(f"try:      curl -F manuscript=@paper.pdf http://{args.host}:{args.port}/manuscripts")
    config = uvicorn.Config(create_app(settings), host=args.host, port=args.port)
    logging.getLogger("uvicorn.access").addFilter(RedactCallbackTokens())  # after Config's setup
    server = uvicorn.Server(config)
    try:
        await server.serve()
    finally:
        if emulator is not None:
            await emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.fastapi_service")
    parser.add_argument("--emulator", action="store_true", help="use an in-process emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--speed", type=float, default=10.0, help="emulator speed factor (default 10)"
    )
    parser.add_argument(
        "--processing-time",
        type=float,
        default=30.0,
        help="emulated seconds a scan takes (default 30: 3 real seconds at speed 10)",
    )
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
