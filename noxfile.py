"""CI sessions: the suite on every supported Python and on the lowest declared dependencies,
the linters, the type-completeness score, the docs build and a wheel installed from scratch.

    nox -s tests-3.12 tests-3.13 lowest lint docs wheel    # what .ci/run calls
    nox -l                                                 # every session

Environments are made by uv (fast, and ``--resolution lowest-direct`` is the lowest-versions
job); no Python is ever downloaded: put the interpreters on PATH (.ci/run does, from pyenv).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "yes"

PYTHONS = ["3.11", "3.12", "3.13"]
PYPROJECT = nox.project.load_toml("pyproject.toml")
ROOT = Path(__file__).resolve().parent
EXTRAS = ".[all]"
# Never let uv fetch an interpreter from the network: CI's come from pyenv.
ENV = {"UV_PYTHON_DOWNLOADS": "never"}


def _groups(*names: str) -> list[str]:
    return [req for name in names for req in nox.project.dependency_groups(PYPROJECT, name)]


def _pytest(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite, warnings as errors, on the newest dependencies."""
    session.install("-e", EXTRAS, *_groups("test"), env=ENV)
    _pytest(session)


@nox.session(python=PYTHONS[0], reuse_venv=False)  # an old environment may hold newer versions
def lowest(session: nox.Session) -> None:
    """The whole suite on the lowest version every declared dependency allows: the floors
    in pyproject.toml are true only if this passes."""
    session.install("--resolution", "lowest-direct", "-e", EXTRAS, *_groups("test"), env=ENV)
    session.run("python", "-c", _CHECK_FLOORS, silent=False)
    _pytest(session)


# Proves the resolver really installed each floor (a floor that cannot be installed, or a test
# tool that drags a dependency above it, would otherwise go unnoticed).
_CHECK_FLOORS = r"""
import re, sys, tomllib
from importlib.metadata import version
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra, more in project["optional-dependencies"].items():
    reqs += [r for r in more if not r.startswith("imagetwin-async")]
# Pulled above its floor by the newest pydantic (FastAPI's, transitive: lowest-direct leaves it
# new); we need only TypeVar defaults, in typing-extensions since 4.12.
PULLED_UP = {"typing-extensions"}
bad = []
for req in reqs:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?>=([0-9][^,;\s]*).*", req)
    if m is None:
        continue
    name, floor = m.groups()
    have = version(name)
    if name in PULLED_UP:
        print(f"  {name:<28} {have} (declared >={floor}; pulled up, see noxfile)")
        continue
    if have != floor and not (have.startswith(floor + ".") or have == floor + ".0"):
        bad.append(f"{name}: declared >={floor}, installed {have}")
    print(f"  {name:<28} {have}")
if bad:
    sys.exit("floors not installed as declared:\n  " + "\n  ".join(bad))
"""


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff, ruff format, mypy --strict, import-linter, pyright on the typing tests and its
    type-completeness score."""
    session.install("-e", EXTRAS, *_groups("test", "lint"), env=ENV)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    # tests/typing (the public API as users write it, with assert_type) under pyright too:
    # users run either checker, and the two narrow differently ([tool.pyright]).
    session.run("pyright", "tests/typing")
    session.run("lint-imports")  # the layering the README states ([tool.importlinter])
    session.run("pyright", "--verifytypes", "imagetwin_async", "--ignoreexternal")


@nox.session(python=PYTHONS[0])
def docs(session: nox.Session) -> None:
    """The API reference from the docstrings; any warning fails the build."""
    session.install("-e", EXTRAS, *_groups("docs"), env=ENV)
    with tempfile.TemporaryDirectory() as site:
        session.run("mkdocs", "build", "--strict", "--site-dir", site)


@nox.session(python=PYTHONS[0], venv_backend="none")
def wheel(session: nox.Session) -> None:
    """Build the wheel and try it as a new user would, in fresh venvs outside the checkout."""
    with tempfile.TemporaryDirectory() as tmp:
        uv = [sys.executable, "-m", "uv"]
        session.run(*uv, "build", "--wheel", "--out-dir", tmp, str(ROOT), env=ENV)
        (built,) = Path(tmp).glob("imagetwin_async-*.whl")
        session.run(
            sys.executable,
            str(ROOT / "tests" / "packaging" / "wheel_smoke.py"),
            str(built),
            env={**ENV, "PATH": os.environ["PATH"]},
        )
