"""The emulator package's surface: an honest __all__, and no dependency on the client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imagetwin_async.emulator as emulator

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_sorted_and_honest() -> None:
    assert emulator.__all__ == sorted(emulator.__all__, key=lambda n: (not n.isupper(), n))
    for name in emulator.__all__:
        assert hasattr(emulator, name), name
    public = {n for n in vars(emulator) if not n.startswith("_") and n != "annotations"}
    modules = {n for n in public if type(getattr(emulator, n)).__name__ == "module"}
    assert public - modules == set(emulator.__all__)


def test_emulator_does_not_import_the_client() -> None:
    # Stand in for imagetwin_async/__init__ (which re-exports the client) to see what the
    # emulator itself pulls in.
    code = "\n".join(
        [
            "import sys, types",
            "package = types.ModuleType('imagetwin_async')",
            f"package.__path__ = [{str(ROOT / 'imagetwin_async')!r}]",
            "sys.modules['imagetwin_async'] = package",
            "import imagetwin_async.emulator, imagetwin_async.emulator.pytest_plugin",
            "print(sorted(m for m in sys.modules if m.startswith('imagetwin_async.')",
            "             and not m.startswith('imagetwin_async.emulator')))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['imagetwin_async._spec']"


def test_emulator_sources_import_only_spec() -> None:
    package = Path(emulator.__file__).parent
    for source in package.glob("*.py"):
        for line in source.read_text().splitlines():
            if line.startswith(("from .. import", "from imagetwin_async.")):
                assert line in {"from .. import _spec"} or "emulator" in line, (source.name, line)
            assert not line.startswith("from .._"), (source.name, line)
