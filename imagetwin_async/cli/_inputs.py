"""Where a command's paths and ids come from: its arguments, ``-`` (stdin), the bundled samples.

    $ find papers -name '*.pdf' | imagetwin scan -
    $ imagetwin scan --no-wait --json papers/ | jq -r '.items[].scan_id' | imagetwin wait -
    $ imagetwin scan --emulator --samples

Kept free of click and rich: pure functions over the arguments and a text stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TextIO

__all__ = ["STDIN", "expand", "samples_dir"]

STDIN = "-"


def samples_dir() -> str:
    """The sample manuscripts shipped inside the package (three PDFs and a folder of figures)."""
    return str(resources.files("imagetwin_async").joinpath("samples"))


def expand(args: Sequence[str], stdin: TextIO, *, samples: bool = False) -> list[str]:
    """``args`` with ``-`` replaced by the lines of ``stdin`` (blank lines and surrounding
    spaces dropped; read once, however often ``-`` appears) and the samples added if asked.
    """
    out: list[str] = []
    read = False
    for arg in args:
        if arg != STDIN:
            out.append(arg)
        elif not read:
            out.extend(_lines(stdin))
            read = True
    if samples:
        out.append(samples_dir())
    return out


def _lines(stream: Iterable[str]) -> list[str]:
    return [line.strip() for line in stream if line.strip()]
