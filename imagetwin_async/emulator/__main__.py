"""``python -m imagetwin_async.emulator --help``."""

from ._cli import main

raise SystemExit(main())
