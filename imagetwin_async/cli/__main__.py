"""``python -m imagetwin_async.cli``: the same as the ``imagetwin`` script."""

from . import main

raise SystemExit(main())
