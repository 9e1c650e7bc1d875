"""``imagetwin``: the command line program, built on the SDK with click and rich.

    $ imagetwin scan --emulator --samples
    $ imagetwin --help

Only this package imports click and rich (the ``cli`` extra); ``imagetwin_async`` itself never
does. Without the extra, ``main`` prints how to install it instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._exitcodes import ExitCode

__all__ = ["ExitCode", "main"]

_EXTRA = "click", "rich"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``imagetwin`` with ``argv`` (default: the process's arguments); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["emulator"]:  # needs neither click nor rich: works without the extra
        from ._emulator_command import serve_emulator  # noqa: PLC0415

        return serve_emulator(args[1:])
    try:
        from ._commands import run  # noqa: PLC0415 - the import that needs the extra
    except ModuleNotFoundError as exc:
        if exc.name not in _EXTRA:
            raise
        print(
            f"imagetwin: the command line needs {exc.name}: pip install 'imagetwin-async[cli]'",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    return run(args)
