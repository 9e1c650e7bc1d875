"""A new user's first minutes, from the built wheel, in fresh venvs outside any checkout.

    python tests/packaging/wheel_smoke.py dist/imagetwin_async-*.whl     (nox -s wheel)

Not collected by pytest (it builds environments: minutes, network to the package index).
Each check names what a user would see go wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def run(*args: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode not in ok:
        sys.exit(f"{' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def venv(where: Path, wheel: Path, extras: str = "") -> Path:
    uv = (sys.executable, "-m", "uv")
    run(*uv, "venv", "-q", "-p", sys.executable, str(where), cwd=where.parent)
    target = f"imagetwin-async{extras} @ {wheel.as_uri()}"
    run(
        *uv,
        "pip",
        "install",
        "-q",
        "--python",
        str(where / "bin" / "python"),
        target,
        cwd=where.parent,
    )
    return where / "bin"


def main(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    samples = [n for n in names if n.startswith("imagetwin_async/samples/")]
    assert len(samples) >= 6, f"sample documents missing from the wheel: {samples}"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "no LICENSE in the wheel"
    assert "imagetwin_async/py.typed" in names, "no py.typed: type checkers would ignore us"

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        bare = venv(home / "bare", wheel)
        # The emulator needs only aiohttp: no click, no rich.
        done = run(str(bare / "imagetwin"), "emulator", "--help", cwd=home)
        assert "--rate-limit" in done.stdout, done.stdout
        # Integrations without their extra name the command to run.
        for module, extra in (("fastapi", "fastapi"), ("redis", "redis")):
            done = run(
                str(bare / "python"), "-c", f"import imagetwin_async.{module}", cwd=home, ok=(1,)
            )
            wanted = f"pip install 'imagetwin-async[{extra}]'"
            assert wanted in done.stderr, done.stderr
        done = run(str(bare / "imagetwin"), "scan", "--emulator", "--samples", cwd=home, ok=(2,))
        assert "pip install 'imagetwin-async[cli]'" in done.stderr, done.stderr

        # The first command of the docs works after pip install, with no checkout around.
        cli = venv(home / "cli", wheel, "[cli]")
        done = run(
            str(cli / "imagetwin"), "scan", "--emulator", "--samples", "--json", cwd=home, ok=(0, 1)
        )
        report = json.loads(done.stdout)
        assert report["summary"]["total"] == 4, report
        assert all(scan["status"] in ("clean", "findings") for scan in report["scans"]), report
    print(f"wheel smoke test passed: {wheel.name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
